//go:build tools

// Package tools keeps the CLI's main package in this wrapper module's dependency
// graph: pkg/v3 carries `replace ../sdk` directives, so `go install module@version`
// refuses it; scripts/bootstrap-engine.sh builds it from this module instead.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
