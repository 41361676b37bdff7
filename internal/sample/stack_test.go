package sample

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/bulkhead/bulkhead/internal/spec"
)

var anyDir = spec.Env{DirExists: func(string) bool { return true }}

func parse(t *testing.T, data []byte) *spec.Stack {
	t.Helper()
	st, err := spec.Parse("bulkhead.yaml", data)
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	if err := spec.Validate(st, anyDir); err != nil {
		t.Fatalf("validate:\n%v", err)
	}
	return st
}

// TestStackFileIsDefault keeps the manual from drifting from the defaults:
// the sample file must describe exactly the stack an empty file does.
func TestStackFileIsDefault(t *testing.T) {
	got, want := parse(t, StackFile()), spec.Default()
	// Every field the file can set, so a new one is compared too.
	typ := reflect.TypeOf(spec.Stack{})
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		compare(t, tag, reflect.ValueOf(got).Elem().Field(i), reflect.ValueOf(want).Elem().Field(i))
	}
	if len(got.Tiers) != len(want.Tiers) {
		t.Errorf("tiers: file has %d, default has %d", len(got.Tiers), len(want.Tiers))
	}
}

// compare reports every field where got and want differ, naming it the way
// the stack file does ("tiers.app.replicas").
func compare(t *testing.T, field string, got, want reflect.Value) {
	t.Helper()
	switch got.Kind() {
	case reflect.Pointer:
		if got.IsNil() || want.IsNil() {
			if got.IsNil() != want.IsNil() {
				t.Errorf("%s: file has %v, default has %v", field, got, want)
			}
			return
		}
		compare(t, field, got.Elem(), want.Elem())
		return
	case reflect.Map:
		for _, k := range want.MapKeys() {
			g := got.MapIndex(k)
			if !g.IsValid() {
				t.Errorf("%s.%s: missing from the file", field, k)
				continue
			}
			compare(t, field+"."+k.String(), g, want.MapIndex(k))
		}
		for _, k := range got.MapKeys() {
			if !want.MapIndex(k).IsValid() {
				t.Errorf("%s.%s: in the file but not in the default stack", field, k)
			}
		}
		return
	case reflect.Struct:
		if got.Type().NumField() == 0 || got.Type().PkgPath() != reflect.TypeOf(spec.Stack{}).PkgPath() {
			break // netip values and the like compare whole
		}
		for i := 0; i < got.NumField(); i++ {
			f := got.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name := f.Tag.Get("yaml")
			if name == "" || name == "-" {
				name = f.Name
			}
			compare(t, field+"."+name, got.Field(i), want.Field(i))
		}
		return
	case reflect.Slice:
		if got.Len() == 0 && want.Len() == 0 {
			return // a written empty list and an absent one mean the same
		}
	}
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		t.Errorf("%s: file has %v, default has %v", field, got, want)
	}
}

// TestStackFileDocumented checks that every setting carries a comment: on the
// line before it, or at the end of its own line.
func TestStackFileDocumented(t *testing.T) {
	lines := strings.Split(string(StackFile()), "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if hasTrailingComment(line) {
			continue
		}
		if i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			continue
		}
		t.Errorf("bulkhead.yaml:%d: %q has no comment before it or after it", i+1, trimmed)
	}
	if strings.Contains(string(StackFile()), "\t") {
		t.Error("bulkhead.yaml contains a tab; YAML indents with spaces")
	}
}

// hasTrailingComment reports whether a YAML line ends with a comment: a "#"
// after whitespace, outside quotes.
func hasTrailingComment(line string) bool {
	var quote rune
	prev := ' '
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (prev == ' ' || prev == '\t'):
			return true
		}
		prev = r
	}
	return false
}

func TestHasTrailingComment(t *testing.T) {
	for line, want := range map[string]bool{
		`name: demo # the name`:   true,
		`name: demo`:              false,
		`- "*.css"   # css`:       true,
		`- "a #b"`:                false,
		`url: http://x/#fragment`: false,
		`# only a comment`:        true,
	} {
		if got := hasTrailingComment(line); got != want {
			t.Errorf("hasTrailingComment(%q) = %v, want %v", line, got, want)
		}
	}
}

// exampleRE matches the file's commented-out examples: "#" followed directly
// by a setting, where prose comments have "# " and a space.
var exampleRE = regexp.MustCompile(`(?m)^(\s*)#([^\s#])`)

// TestStackFileExamples uncomments the examples and checks that they are
// valid settings, so that a user who follows the manual gets a stack.
func TestStackFileExamples(t *testing.T) {
	uncommented := exampleRE.ReplaceAll(StackFile(), []byte("$1$2"))
	n := len(exampleRE.FindAll(StackFile(), -1))
	if n < 2 {
		t.Fatalf("found %d examples, want at least the dmz and a flow", n)
	}
	st := parse(t, uncommented)
	if !st.Networks.DMZ.IsValid() {
		t.Error("the dmz example sets no dmz")
	}
	if len(st.Flows) == 0 {
		t.Error("the flows example sets no flow")
	}
	if st.ByRole(spec.RoleMail) == nil || !st.SmarthostAddr().IsValid() {
		t.Error("the mail examples set no mail tier with a smarthost")
	}
	checkWritten(t, uncommented, true)
}

// TestStackFileComplete checks that the file writes out every setting instead
// of leaving it to a default, so that the manual shows each one.
func TestStackFileComplete(t *testing.T) {
	checkWritten(t, StackFile(), false)
}

func checkWritten(t *testing.T, data []byte, examples bool) {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	// Settings left out on purpose: storage has no software and only storage
	// has a protocol; the dmz, flows and mail are examples.
	skip := func(field string) bool {
		switch {
		case strings.HasPrefix(field, "tiers.storage.software"):
			return true
		case strings.HasPrefix(field, "tiers.") && strings.HasSuffix(field, ".protocol") && field != "tiers.storage.protocol":
			return true
		case field == "networks.dmz", field == "flows", field == "mail":
			return !examples
		}
		return false
	}
	walk(t, "", root.Content[0], reflect.TypeOf(spec.Stack{}), skip)
}

// walk checks that node, the YAML for a value of type typ, writes every
// field typ has.
func walk(t *testing.T, field string, node *yaml.Node, typ reflect.Type, skip func(string) bool) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	join := func(k string) string {
		if field == "" {
			return k
		}
		return field + "." + k
	}
	switch typ.Kind() {
	case reflect.Struct:
		if typ.PkgPath() != reflect.TypeOf(spec.Stack{}).PkgPath() {
			return
		}
		keys := map[string]*yaml.Node{}
		if node.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(node.Content); i += 2 {
				keys[node.Content[i].Value] = node.Content[i+1]
			}
		}
		for i := 0; i < typ.NumField(); i++ {
			tag := typ.Field(i).Tag.Get("yaml")
			if tag == "" || tag == "-" || skip(join(tag)) {
				continue
			}
			v, ok := keys[tag]
			if !ok || v.Tag == "!!null" {
				t.Errorf("%s: not written out", join(tag))
				continue
			}
			walk(t, join(tag), v, typ.Field(i).Type, skip)
		}
	case reflect.Map:
		for i := 0; i+1 < len(node.Content); i += 2 {
			walk(t, join(node.Content[i].Value), node.Content[i+1], typ.Elem(), skip)
		}
	case reflect.Slice:
		for i, item := range node.Content {
			walk(t, fmt.Sprintf("%s[%d]", field, i), item, typ.Elem(), skip)
		}
	}
}
