package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	// ringLines is how many recent lines of each service the agent keeps.
	ringLines = 500
	// maxLine splits longer lines, so that one runaway line cannot make
	// the ring hold megabytes.
	maxLine = 8 << 10
)

// output collects one service's stdout and stderr, and its setup's, line by
// line into a ring of recent lines and an append-only log file.
type output struct {
	name string
	log  *slog.Logger

	mu      sync.Mutex
	ring    ring
	file    *logFile // nil without a log dir
	fileErr error    // the first write error, logged once
	pipes   map[*os.File]bool

	readers sync.WaitGroup
}

func newOutput(dir, name string, maxSize int64, log *slog.Logger) (*output, error) {
	o := &output{name: name, log: log, ring: ring{lines: make([]string, ringLines)}, pipes: map[*os.File]bool{}}
	if dir != "" {
		f, err := openLog(filepath.Join(dir, name+".log"), maxSize)
		if err != nil {
			return nil, err
		}
		o.file = f
	}
	return o, nil
}

// pipe returns the write end of a new pipe whose lines go to o. The caller
// hands it to a process and closes it. Lines keep coming until every
// process holding the write end has closed it, which may be after a
// restart: the old instance's leftovers and the new one then share o.
func (o *output) pipe() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output of %s: %w", o.name, err)
	}
	o.mu.Lock()
	o.pipes[r] = true
	o.mu.Unlock()
	o.readers.Add(1)
	go func() {
		defer o.readers.Done()
		o.copy(r)
		o.mu.Lock()
		delete(o.pipes, r)
		o.mu.Unlock()
		r.Close()
	}()
	return w, nil
}

func (o *output) copy(r io.Reader) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			o.line(string(b[:len(b)-1]))
		case errors.Is(err, bufio.ErrBufferFull):
			o.line(string(b))
		default:
			if len(b) > 0 {
				o.line(string(b))
			}
			return
		}
	}
}

// line records one line.
func (o *output) line(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ring.add(s)
	if o.file == nil {
		return
	}
	if err := o.file.write(s); err != nil && o.fileErr == nil {
		o.fileErr = err
		o.log.Error("write log", "service", o.name, "err", err)
	}
}

// notef records a line from the agent itself about the service.
func (o *output) notef(format string, args ...any) {
	o.line(time.Now().UTC().Format(time.RFC3339) + " bulkhead-agent: " + fmt.Sprintf(format, args...))
}

// last returns up to n of the most recent lines, oldest first.
func (o *output) last(n int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ring.last(n)
}

// close waits up to timeout for the pipes to reach EOF, then closes those
// still held open (by a process that escaped its group) and the log file.
func (o *output) close(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		o.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		o.mu.Lock()
		for r := range o.pipes {
			r.Close() // unblocks its reader
		}
		o.mu.Unlock()
		<-done
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		if err := o.file.close(); err != nil {
			o.log.Error("close log", "service", o.name, "err", err)
		}
		o.file = nil
	}
}

// ring holds the most recent lines.
type ring struct {
	lines []string
	next  int
	full  bool
}

func (r *ring) add(s string) {
	r.lines[r.next] = s
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

// last returns up to n lines, oldest first; n <= 0 means all.
func (r *ring) last(n int) []string {
	size := r.next
	if r.full {
		size = len(r.lines)
	}
	if n <= 0 || n > size {
		n = size
	}
	out := make([]string, 0, n)
	for i := range n {
		j := (r.next - n + i + len(r.lines)) % len(r.lines)
		out = append(out, r.lines[j])
	}
	return out
}

// logFile is an append-only log that is renamed to PATH.1 when it would
// grow beyond max bytes.
type logFile struct {
	path string
	max  int64
	f    *os.File
	size int64
}

func openLog(path string, max int64) (*logFile, error) {
	l := &logFile{path: path, max: max}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *logFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

func (l *logFile) write(s string) error {
	var rotateErr error
	if n := int64(len(s) + 1); l.size > 0 && l.size+n > l.max {
		rotateErr = l.rotate()
	}
	if l.f == nil {
		// A rotation failed half way; keep writing where we can.
		if err := l.open(); err != nil {
			return errors.Join(rotateErr, err)
		}
	}
	m, err := l.f.WriteString(s + "\n")
	l.size += int64(m)
	if err != nil {
		err = fmt.Errorf("write log: %w", err)
	}
	return errors.Join(rotateErr, err)
}

func (l *logFile) rotate() error {
	if err := l.f.Close(); err != nil {
		l.f = nil
		return fmt.Errorf("rotate log: %w", err)
	}
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return errors.Join(fmt.Errorf("rotate log: %w", err), l.open())
	}
	return l.open()
}

func (l *logFile) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
