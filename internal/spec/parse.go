package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load parses and validates a stack file and reports every problem in it at
// once: values that do not decode, and rules the decoded values break.
func Load(file string, data []byte, env Env) (*Stack, error) {
	s, decodeErrs := parse(file, data)
	if s == nil {
		return nil, decodeErrs
	}
	errs := append(Errors(nil), decodeErrs...)
	if err := Validate(s, env); err != nil {
		for _, e := range AsErrors(err) {
			if !s.undecoded(e.Field) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// Parse reads a stack file's bytes. file names it in messages and anchors
// relative paths. Parse reports every value that does not decode, at once,
// as Errors; the returned Stack has defaults applied and still needs
// Validate. Load does both.
func Parse(file string, data []byte) (*Stack, error) {
	s, errs := parse(file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

func parse(file string, data []byte) (*Stack, Errors) {
	s := &Stack{File: file, Dir: filepath.Dir(file), pos: map[string]Pos{"": {1, 1}}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(file, err)}
	}
	d := &decoder{stack: s}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], "", reflect.ValueOf(s).Elem())
	}
	for _, e := range d.errs {
		if s.bad == nil {
			s.bad = map[string]bool{}
		}
		s.bad[e.Field] = true
	}
	ApplyDefaults(s)
	return s, d.errs
}

// undecoded reports whether field, or a field that encloses it, failed to
// decode: its value is a default, and rules about it would only confuse.
func (s *Stack) undecoded(field string) bool {
	for f := field; f != ""; {
		if s.bad[f] {
			return true
		}
		i := lastDot(f)
		if i < 0 {
			return false
		}
		f = f[:i]
	}
	return false
}

// syntaxError turns a YAML syntax error ("yaml: line 3: ...") into an Error.
func syntaxError(file string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line, msg = n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return &Error{File: file, Pos: Pos{line, 1}, Msg: "invalid YAML: " + msg,
		Hint: "fix the syntax; indent with spaces, not tabs"}
}

type decoder struct {
	stack *Stack
	errs  Errors
}

func (d *decoder) fail(n *yaml.Node, field, msg, hint string) {
	d.errs = append(d.errs, &Error{File: d.stack.File, Pos: Pos{n.Line, n.Column}, Field: field, Msg: msg, Hint: hint})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	prefixType   = reflect.TypeOf(netip.Prefix{})
	addrPortType = reflect.TypeOf(netip.AddrPort{})
	byteSizeType = reflect.TypeOf(ByteSize(0))
)

// decode fills v from n, recording the position of every field it meets.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.stack.pos[path] = Pos{n.Line, n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the zero value, and so the default
	}
	switch v.Type() {
	case prefixType:
		p, err := parsePrefix(n.Value)
		if err != nil {
			d.fail(n, path, err.Error(), "write a subnet in CIDR form, like 10.77.0.0/24")
			return
		}
		v.Set(reflect.ValueOf(p))
		return
	case addrPortType:
		ap, err := parseAddrPort(n.Value)
		if err != nil {
			d.fail(n, path, err.Error(), "write an address and port, like 127.0.0.1:8080")
			return
		}
		v.Set(reflect.ValueOf(ap))
		return
	case byteSizeType:
		b, err := ParseByteSize(n.Value)
		if err != nil {
			d.fail(n, path, err.Error(), "write a size like 256M or 1G")
			return
		}
		v.Set(reflect.ValueOf(b))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Map:
		d.decodeMap(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list", "write one item per line, each starting with \"- \"")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, path, p.Elem())
		v.Set(p)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a single value", "write a plain string")
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(n, path, fmt.Sprintf("expected true or false, got %q", n.Value), "write true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(n, path, fmt.Sprintf("expected a whole number, got %q", n.Value), "write digits only, like 2")
			return
		}
		v.SetInt(int64(i))
	default:
		panic("spec: no decoder for " + v.Type().String())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping of fields", "write \"field: value\" lines, indented under "+displayField(path))
		return
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		tag := v.Type().Field(i).Tag.Get("yaml")
		if tag != "" && tag != "-" {
			fields[tag] = i
			names = append(names, tag)
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		field := join(path, k.Value)
		if seen[k.Value] {
			d.fail(k, field, "field is set twice", "remove one of the two")
			continue
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			d.fail(k, field, "unknown field", suggest(k.Value, names))
			continue
		}
		d.decode(val, field, v.Field(idx))
	}
}

func (d *decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping", "write \"name:\" lines, indented under "+displayField(path))
		return
	}
	m := reflect.MakeMap(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		field := join(path, k.Value)
		if seen[k.Value] {
			d.fail(k, field, "name is used twice", "give each entry its own name")
			continue
		}
		seen[k.Value] = true
		d.stack.pos[field+"#key"] = Pos{k.Line, k.Column}
		if v.Type() == tiersType && d.tierSwitch(val, field, k.Value) {
			if !d.stack.off[k.Value] {
				m.SetMapIndex(reflect.ValueOf(k.Value), reflect.ValueOf(&Tier{}))
			}
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, field, e)
		if e.Kind() == reflect.Pointer && e.IsNil() {
			e.Set(reflect.New(v.Type().Elem().Elem())) // "app:" with nothing under it
		}
		m.SetMapIndex(reflect.ValueOf(k.Value), e)
	}
	v.Set(m)
}

var tiersType = reflect.TypeOf(map[string]*Tier(nil))

// tierSwitch reads a tier written as a word instead of its fields: off
// (or false) turns the tier off, on (or true) is the tier with every
// default, like {}. It reports whether n was such a word, or a scalar
// that is neither (then it has failed).
func (d *decoder) tierSwitch(n *yaml.Node, field, name string) bool {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return false
	}
	d.stack.pos[field] = Pos{n.Line, n.Column}
	switch strings.ToLower(n.Value) {
	case "off", "false":
		if d.stack.off == nil {
			d.stack.off = map[string]bool{}
		}
		d.stack.off[name] = true
	case "on", "true":
	default:
		d.fail(n, field, fmt.Sprintf("expected the tier's fields, on or off, got %q", n.Value),
			"write off to run the stack without this tier, or its fields (like replicas: 2) indented under "+field+":")
	}
	return true
}

func displayField(path string) string {
	if path == "" {
		return "the top level"
	}
	return path + ":"
}

// suggest names the closest known field, so a typo gets its fix.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dd := distance(got, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	sort.Strings(known)
	if best != "" {
		return fmt.Sprintf("did you mean %q? (known fields: %s)", best, strings.Join(known, ", "))
	}
	return "known fields: " + strings.Join(known, ", ")
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev = cur
	}
	return prev[len(b)]
}

// parseAddr parses an IP address and says which part is wrong when it is not
// one: "837 is not an octet" beats "invalid IP".
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%q has a zone; zones are not allowed", s)
		}
		return a, nil
	}
	if parts := strings.Split(s, "."); len(parts) == 4 && !strings.Contains(s, ":") {
		for _, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || p == "" {
				return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address: %q is not a number", s, p)
			}
			if n > 255 || n < 0 {
				return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address: %d is not an octet (0-255)", s, n)
			}
			if len(p) > 1 && p[0] == '0' {
				return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address: %q has a leading zero", s, p)
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
}

func parsePrefix(s string) (netip.Prefix, error) {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q has no prefix length", s)
	}
	a, err := parseAddr(addr)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not IPv4; stack subnets are IPv4", s)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > 32 || (len(bits) > 1 && bits[0] == '0') {
		return netip.Prefix{}, fmt.Errorf("%q: prefix length %q is not a number from 0 to 32", s, bits)
	}
	p := netip.PrefixFrom(a, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; the subnet is %s", s, p.Masked())
	}
	return p, nil
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("%q has no port", s)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]")
	if host == "localhost" {
		host = "127.0.0.1"
	}
	a, err := parseAddr(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil || p < 1 || p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%q: port %q is outside 1-65535", s, s[i+1:])
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// Error is one problem in a stack file, placed like a compiler's.
type Error struct {
	File  string
	Pos   Pos
	Field string
	Msg   string
	Hint  string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:%d: ", e.File, e.Pos.Line, e.Pos.Col)
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	sorted := append(Errors(nil), es...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Pos, sorted[j].Pos
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	lines := make([]string, len(sorted))
	for i, e := range sorted {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// AsErrors returns the spec errors inside err, if any.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	return nil
}
