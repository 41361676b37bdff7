// Package backup writes and reads bulkhead's backup archives: one file
// that holds what a stack needs back after its host is lost. It is the
// format only; running the database's dump inside the db node, and putting
// what an archive holds back in place, belong to the CLI and the driver.
//
// # Layout
//
// An archive is a tar stream compressed with zstd, whose members come in
// this order:
//
//	db/, db/<dump>    the database's dump, as the db node's tool wrote it
//	uploads/...       the site's writable paths: directories and regular files
//	release/...       the live release's code: directories and regular files
//	stack.yaml        the stack file
//	secrets.age       the stack's secrets, encrypted with age (optional)
//	manifest.json     what every member above must be
//
// and then a 64-byte trailer. Modes (the permission bits) and modification
// times are kept; owners, links, devices and special bits are not: an
// archive holds only directories and regular files, and no reader accepts
// anything else.
//
// # Why the manifest comes last
//
// The manifest lists every member with its size and SHA-256, so it can
// only be written once every member has been. Members are streamed, and
// their sources cannot be read twice: the dump comes from a pipe, and the
// uploads are a tree the site keeps writing, so a first pass that hashes
// and a second that writes would disagree whenever an upload arrived in
// between, making an archive that fails its own check. Writing the members
// to a spool and the archive after them would cost the archive's size in
// disk and time once more. So each member is hashed as it is written and
// the manifest is written after them, in a zstd frame of its own.
//
// The trailer lets a reader that holds the file read the manifest first
// anyway. It is a zstd skippable frame, which zstd and tar pass over (so
// `tar --zstd -xf` still reads an archive), holding the manifest frame's
// offset and the manifest's SHA-256. Inspect reads just that frame: what
// the archive is, which database made its dump, without decompressing the
// rest. A reader of a stream (Verify) checks each member as it passes and,
// at the end, compares them all with the manifest and the manifest with
// the trailer. Extract does both: it reads the manifest through the
// trailer, verifies the whole file against it, and only then reads the
// file a second time to write, checking each member again on the way.
//
// A stream cannot give a tar header the size of what a pipe has not yet
// delivered, so the dump alone is spooled to an unnamed temporary file
// (O_TMPFILE, which vanishes with its descriptor) before the archive
// starts. That also lets the database's tool finish, and its transaction
// end, without waiting for the compressor.
//
// An archive's checksums detect damage, not tampering: anyone who can
// write an archive can write a matching manifest. Keep archives where only
// the host's root can write; secrets.age is the only member that is
// confidential.
package backup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"
)

// Format is the version of the archive format this package writes, and
// the only one it reads.
const Format = 1

// kind marks a manifest as bulkhead's.
const kind = "bulkhead-backup"

// Member names at the top of an archive.
const (
	manifestName = "manifest.json"
	stackName    = "stack.yaml"
	secretsName  = "secrets.age"
	dbDir        = "db"
	uploadsDir   = "uploads"
	releaseDir   = "release"
)

// Limits that keep a hostile archive from taking the reader's memory.
const (
	maxManifest = 256 << 20 // about a million members
	maxSecrets  = 16 << 20
	// maxWindow bounds the zstd window a reader accepts; the writer uses
	// zstd's default for its level, 8 MiB at most.
	maxWindow = 64 << 20
)

// Manifest describes an archive: what made it, and every member but
// itself, in the order the archive holds them.
type Manifest struct {
	Kind     string    `json:"kind"`   // "bulkhead-backup"
	Format   int       `json:"format"` // Format
	Bulkhead string    `json:"bulkhead"`
	Stack    string    `json:"stack"`
	Created  time.Time `json:"created"`
	// DB is the database whose dump the archive holds; nil when it holds
	// none.
	DB      *DB      `json:"db,omitempty"`
	Members []Member `json:"members"`
}

// DB describes the database an archive's dump came from.
type DB struct {
	Role     string `json:"role"`     // "db"
	Software string `json:"software"` // "mariadb"
	// Version is what the server said it was when it was dumped.
	Version string `json:"version"`
	// DumpFormat is the catalog's name for the dump's format; a restore
	// refuses a format its database cannot load.
	DumpFormat string `json:"dump_format"`
	// DumpFile is the dump's name under db/.
	DumpFile string `json:"dump_file"`
}

// Member is one directory or regular file of an archive.
type Member struct {
	Path string `json:"path"` // slash-separated, relative, no trailing slash
	Dir  bool   `json:"dir,omitempty"`
	// Mode is the permission bits, in octal: "0644".
	Mode    string    `json:"mode"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256,omitempty"` // hex, of a file's bytes
	ModTime time.Time `json:"mtime"`            // whole seconds, UTC
}

// Perm is the member's permission bits.
func (m Member) Perm() fs.FileMode {
	v, _ := strconv.ParseUint(m.Mode, 8, 32)
	return fs.FileMode(v) & fs.ModePerm
}

func modeString(p fs.FileMode) string { return fmt.Sprintf("%04o", p&fs.ModePerm) }

// Bytes is the size of all the members' content.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, mb := range m.Members {
		n += mb.Size
	}
	return n
}

// HasSecrets says whether the archive holds secrets.age.
func (m *Manifest) HasSecrets() bool {
	for _, mb := range m.Members {
		if mb.Path == secretsName {
			return true
		}
	}
	return false
}

// The kinds of problem an archive can have. Errors from this package wrap
// one of them in an *Error, so that errors.Is tells them apart.
var (
	ErrForeign    = errors.New("not a bulkhead archive")
	ErrFormat     = errors.New("unknown archive format")
	ErrCorrupt    = errors.New("the archive is corrupt")
	ErrTruncated  = errors.New("the archive is truncated")
	ErrChecksum   = errors.New("checksum mismatch")
	ErrMismatch   = errors.New("the archive does not match its manifest")
	ErrUnsafe     = errors.New("unsafe member")
	ErrPassphrase = errors.New("wrong passphrase or key for secrets.age")
	ErrNotEmpty   = errors.New("the destination is not empty")
	// ErrChanged is a file of the uploads that changed while it was
	// archived: the site wrote it then. A new backup reads it anew.
	ErrChanged = errors.New("a file changed while it was archived; run the backup again")
)

// Error is a problem with an archive, or with where it would go.
type Error struct {
	Kind   error  // one of the Err values
	Member string // the member at fault, or ""
	Err    error  // what was found, or nil
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Member != "" {
		s += ": member " + e.Member
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func problem(kind error, member, format string, args ...any) error {
	return &Error{Kind: kind, Member: member, Err: fmt.Errorf(format, args...)}
}

// The trailer is a zstd skippable frame (magic 0x184D2A5E, then the
// length of what follows) that holds, little-endian:
//
//	8 bytes   "bulkhead"
//	4 bytes   Format
//	4 bytes   zero
//	8 bytes   the offset of the zstd frame that holds manifest.json
//	32 bytes  the SHA-256 of manifest.json's content
const (
	trailerSize  = 64
	trailerMagic = 0x184D2A5E
	trailerTag   = "bulkhead"
)

type trailer struct {
	format int
	offset int64
	sum    [sha256.Size]byte
}

func (t trailer) bytes() []byte {
	b := make([]byte, trailerSize)
	binary.LittleEndian.PutUint32(b[0:], trailerMagic)
	binary.LittleEndian.PutUint32(b[4:], trailerSize-8)
	copy(b[8:], trailerTag)
	binary.LittleEndian.PutUint32(b[16:], uint32(t.format))
	binary.LittleEndian.PutUint64(b[24:], uint64(t.offset))
	copy(b[32:], t.sum[:])
	return b
}

// parseTrailer reads the trailer at the end of an archive of size bytes.
func parseTrailer(b []byte, size int64) (trailer, error) {
	var t trailer
	if len(b) != trailerSize || binary.LittleEndian.Uint32(b[0:]) != trailerMagic ||
		binary.LittleEndian.Uint32(b[4:]) != trailerSize-8 || string(b[8:16]) != trailerTag {
		return t, errors.New("no bulkhead trailer at its end")
	}
	t.format = int(binary.LittleEndian.Uint32(b[16:]))
	if t.format != Format {
		return t, &Error{Kind: ErrFormat, Err: fmt.Errorf("format %d; this bulkhead reads format %d only (a newer bulkhead may read it)", t.format, Format)}
	}
	off := binary.LittleEndian.Uint64(b[24:])
	if off >= uint64(size-trailerSize) {
		return t, fmt.Errorf("the trailer points at offset %d, past the archive's data", off)
	}
	t.offset = int64(off)
	copy(t.sum[:], b[32:])
	return t, nil
}

// parseManifest reads and checks manifest.json's content.
func parseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, problem(ErrCorrupt, manifestName, "%v", err)
	}
	if m.Kind != kind {
		return nil, problem(ErrForeign, manifestName, "kind %q, not %q", m.Kind, kind)
	}
	if m.Format != Format {
		return nil, problem(ErrFormat, manifestName, "format %d; this bulkhead reads format %d only (a newer bulkhead may read it)", m.Format, Format)
	}
	for _, mb := range m.Members {
		if v, err := strconv.ParseUint(mb.Mode, 8, 32); err != nil || v > 0o777 {
			return nil, problem(ErrCorrupt, manifestName, "member %s has mode %q", mb.Path, mb.Mode)
		}
	}
	return &m, nil
}
