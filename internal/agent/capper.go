package agent

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
)

// capEvery is how often the agent looks at the logs daemons write
// themselves.
const capEvery = 30 * time.Second

// capLogs keeps the logs that daemons write directly (apache's and nginx's
// access and error logs, php-fpm's, lighttpd's) at most max bytes each,
// until ctx is done. A daemon holds its log open in append mode and never
// reopens it, so renaming would not help: the file is copied to NAME.1 (its
// last max bytes) and truncated in place, and the daemon's next write lands
// at the new end (logrotate's copytruncate; lines written between the copy
// and the truncation are lost). own names the agent's own logs, which
// rotate themselves.
func capLogs(ctx context.Context, dir string, max int64, own map[string]bool, report func(name string, err error)) {
	t := time.NewTicker(capEvery)
	defer t.Stop()
	for {
		capOnce(dir, max, own, report)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// capOnce caps every log in dir once.
func capOnce(dir string, max int64, own map[string]bool, report func(string, error)) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		report(dir, err)
		return
	}
	defer root.Close()
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		report(dir, err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".log") || own[name] {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() <= max {
			continue
		}
		if err := capFile(root, name, max); err != nil {
			report(name, err)
		}
	}
}

func capFile(root *os.Root, name string, max int64) error {
	f, err := root.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Size() > max {
		if _, err := f.Seek(info.Size()-max, io.SeekStart); err != nil {
			return err
		}
	}
	old, err := root.OpenFile(name+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(old, f)
	if err := errors.Join(cerr, old.Close()); err != nil {
		return err
	}
	return f.Truncate(0)
}
