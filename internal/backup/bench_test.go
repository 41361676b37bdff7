package backup

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkWrite archives about 64 MiB: a 24 MiB SQL dump, 24 MiB of
// incompressible uploads (photos) and 16 MiB of code and text, and reports
// MB/s of content.
func BenchmarkWrite(b *testing.B) {
	dir := b.TempDir()
	seed := rand.NewChaCha8([32]byte{7})
	rng := rand.New(seed)
	var sql bytes.Buffer
	for i := 0; sql.Len() < 24<<20; i++ {
		fmt.Fprintf(&sql, "INSERT INTO posts VALUES (%d,'post %d','%x',%d);\n", i, i, rng.Uint64(), i*7)
	}
	uploads, release := filepath.Join(dir, "uploads"), filepath.Join(dir, "release")
	for i := range 24 {
		data := make([]byte, 1<<20)
		seed.Read(data)
		p := filepath.Join(uploads, fmt.Sprintf("%02d", i%4), fmt.Sprintf("photo%d.jpg", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, data, 0o644)
	}
	words := strings.Fields("function return echo $post the a of to in is that for it with as on be at by this had not are but from or have an they which")
	for i := range 512 {
		var code bytes.Buffer
		for code.Len() < 32<<10 {
			code.WriteString(words[rng.IntN(len(words))])
			code.WriteByte(" \n"[rng.IntN(2)])
		}
		p := filepath.Join(release, fmt.Sprintf("mod%02d", i%16), fmt.Sprintf("file%d.php", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, code.Bytes(), 0o644)
	}
	src := Source{Stack: "bench", Created: created, DB: &DB{DumpFile: "mariadb.sql", DumpFormat: "mariadb-sql"},
		Uploads: uploads, Release: release, StackFile: []byte(stackYAML)}
	for _, to := range []string{"discard", "file"} {
		b.Run(to, func(b *testing.B) {
			var m *Manifest
			var size int64
			for i := 0; b.Loop(); i++ {
				src.Dump = bytes.NewReader(sql.Bytes())
				var err error
				switch to {
				case "discard":
					cw := &countWriter{w: io.Discard}
					m, err = Write(cw, src, WriteOptions{})
					size = cw.n
				case "file":
					p := filepath.Join(dir, fmt.Sprintf("out%d.tar.zst", i))
					m, err = WriteFile(p, src, WriteOptions{})
					if fi, serr := os.Stat(p); serr == nil {
						size = fi.Size()
					}
					os.Remove(p)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(m.Bytes())
			b.ReportMetric(float64(size)/float64(m.Bytes()), "ratio")
		})
	}
}
