//go:build tools

// Package tools keeps in this wrapper module's go.mod/go.sum everything the
// provider's command package needs: scripts/bootstrap-engine.sh copies
// cmd/pulumi-resource-kubernetes (main.go, generate.go, schema.json) from the
// provider module into a build copy of this module, generates its embedded
// schema and builds it.
package tools

import (
	// main.go
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	// generate.go
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
