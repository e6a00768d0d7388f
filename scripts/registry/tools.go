//go:build tools

// Package tools pins the Schema Registry that scripts/services builds for local tests: AxonOps
// Schema Registry, an independently maintained Confluent-compatible implementation. go.mod and
// go.sum here fix its version and every dependency's checksum.
package tools

import _ "github.com/axonops/axonops-schema-registry/cmd/schema-registry"
