package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// cmdYAML2JSON reads a manifest stream from stdin and decodes it the way
// `kubectl apply -f` does (util/yaml.NewYAMLOrJSONDecoder, which converts
// YAML with sigs.k8s.io/yaml). It prints one compact JSON document per line
// and skips empty and null documents, as kubectl's StreamVisitor does. A
// document kubectl cannot decode ends the output with one line
// "!error MESSAGE", and the command still exits 0, so that callers can
// compare errors as well as values.
func cmdYAML2JSON(args []string) error {
	if len(args) != 0 {
		return errors.New("takes no arguments; the manifest is read from stdin")
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(os.Stdin, 4096)
	out := os.Stdout
	for {
		var ext runtime.RawExtension
		err := decoder.Decode(&ext)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			_, werr := fmt.Fprintf(out, "!error %s\n", oneLine(err.Error()))
			return werr
		}
		raw := bytes.TrimSpace(ext.Raw)
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			continue
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return fmt.Errorf("decoder returned invalid JSON: %w", err)
		}
		if _, err := fmt.Fprintf(out, "%s\n", compact.Bytes()); err != nil {
			return err
		}
	}
}

func oneLine(s string) string {
	return strings.ReplaceAll(s, "\n", " ")
}
