package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is an amount of memory or disk, written like 256M or 1G in a stack file.
type ByteSize int64

// ParseByteSize reads sizes such as "512", "256K", "256M", "1G", "1GiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return ByteSize(n * mult), nil
}

// String writes the size the way a stack file would.
func (b ByteSize) String() string {
	switch {
	case b != 0 && b%(1<<30) == 0:
		return fmt.Sprintf("%dG", b>>30)
	case b != 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dM", b>>20)
	case b != 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dK", b>>10)
	}
	return strconv.FormatInt(int64(b), 10)
}
