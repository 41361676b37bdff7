package render

import (
	"regexp"
	"strings"
)

// The site's writable directories (site.writable, default uploads) hold
// what visitors sent. A node that ran a file from there as PHP would run a
// visitor's code, so every tier that could hand a path to php-fpm refuses
// to: the edge never proxies PHP under a writable path to the app pool, and
// an app node serves such a directory's files as bytes.

// phpExt matches an extension that some PHP handler might run: .php and its
// numbered forms (.php5), .pht, .phtml, .phar and .phps. Our php-fpm runs
// only .php (security.limit_extensions), so the rest are refused as well
// for whoever changes that. Match it case insensitively.
const phpExt = `\.(?:php\d*|pht|phtml|phar|phps)`

// phpFileRegex matches a file name that a PHP handler might run, for a
// server that has already split PATH_INFO off the path (Apache's
// FilesMatch). It ignores case by itself.
const phpFileRegex = `(?i)` + phpExt + `$`

// phpPathRegex matches a request path that names such a file at its end, or
// before a "/", where a server would pass the rest as PATH_INFO
// (/uploads/x.php/y.jpg). Match it case insensitively.
const phpPathRegex = phpExt + `(?:/|$)`

// writableRegex matches a decoded, normalised request path under one of
// the writable directories, or is "" if there are none. Servers serve such
// a path from Layout.Shared, not from the site. It is case sensitive, as
// the file system is.
func writableRegex(writable []string) string {
	if len(writable) == 0 {
		return ""
	}
	dirs := make([]string, len(writable))
	for i, w := range writable {
		dirs[i] = regexp.QuoteMeta(w)
	}
	return `^/(?:` + strings.Join(dirs, "|") + `)/`
}

// writablePHPRegex matches a decoded, normalised request path that names PHP
// under one of the writable directories, or is "" if there are none. Match
// it case insensitively: whatever the file system, /Uploads/x.php is
// nothing a visitor needs. "(?s)" because a decoded path may hold a newline,
// which "." would not otherwise cross.
func writablePHPRegex(writable []string) string {
	if len(writable) == 0 {
		return ""
	}
	return `(?s)` + writableRegex(writable) + `.*` + phpPathRegex
}

// ambiguousPathRegex matches a raw request path (without the query) that
// the edge and a node behind it could resolve differently, and so route one
// way while the node serves another file: an encoded slash, backslash, dot,
// percent sign (a second round of decoding) or NUL, and a "." or ".."
// segment. Browsers resolve dot segments and encode none of these. Match
// it case insensitively.
const ambiguousPathRegex = `%(?:2f|5c|2e|25|00)|/\.\.?(?:/|$)`

// ambiguousURIRegex is ambiguousPathRegex for a raw request target that may
// carry a query (nginx's $request_uri): only its path is looked at.
const ambiguousURIRegex = `^[^?]*(?:%(?:2f|5c|2e|25|00)|/\.\.?(?:[/?]|$))`
