//go:build tools

// Package tools keeps the helm command that build.sh compiles in go.mod.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
