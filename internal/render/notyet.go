package render

import "errors"

var errNotYet = errors.New("not rendered yet")
