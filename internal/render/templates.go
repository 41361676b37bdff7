package render

import (
	"bytes"
	"embed"
	"fmt"
	"strings"
	"text/template"
)

// Every daemon's config template, named after the role and software it is
// for (edge-nginx.conf.tmpl, db-mariadb.cnf.tmpl, ...).
//
//go:embed templates/*.tmpl
var templateFS embed.FS

// templates holds them all, with the quoting functions each daemon's
// syntax needs.
var templates = template.Must(template.New("").Funcs(templateFuncs()).ParseFS(templateFS, "templates/*.tmpl"))

func templateFuncs() template.FuncMap {
	fm := template.FuncMap{
		"q":  confQuote,
		"aq": exprQuote,
		// Apache regexes: double-quoted, with "$" and backslashes passed
		// to PCRE; "${" would expand a Define, but "{" never passes.
		"are":    func(v any) (string, error) { return frontQuote(v, `"`, `$\`) },
		"join":   strings.Join,
		"pgconf": pgConfString,
	}
	for k, v := range frontFuncs {
		fm[k] = v
	}
	return fm
}

// execTemplate renders one template.
func execTemplate(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return b.Bytes(), nil
}
