// Command helmyaml prints what Helm makes of YAML values texts, as JSON.
//
// Helm v3 reads a values file with chartutil.ReadValues: sigs.k8s.io/yaml's Unmarshal into a
// map[string]interface{} (YAML 1.1 scalars by go-yaml v2, converted to JSON and decoded again). This
// program does exactly that, so tests can check that a file the operator writes loads in Helm as intended.
//
//	helmyaml          one YAML text on stdin; prints {"values": ...} or {"error": "..."}
//	helmyaml -batch   a JSON array of YAML texts on stdin; prints a JSON array of such objects, in order
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"
)

type result struct {
	Values map[string]interface{} `json:"values,omitempty"`
	Error  string                 `json:"error,omitempty"`
}

// readValues is Helm's chartutil.ReadValues.
func readValues(data []byte) result {
	var vals map[string]interface{}
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return result{Error: err.Error()}
	}
	if len(vals) == 0 {
		vals = map[string]interface{}{}
	}
	return result{Values: vals}
}

func main() {
	batch := flag.Bool("batch", false, "read a JSON array of YAML texts")
	flag.Parse()
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helmyaml: reading stdin:", err)
		os.Exit(2)
	}
	var out interface{}
	if *batch {
		var texts []string
		if err := json.Unmarshal(input, &texts); err != nil {
			fmt.Fprintln(os.Stderr, "helmyaml: -batch wants a JSON array of strings:", err)
			os.Exit(2)
		}
		results := make([]result, len(texts))
		for i, text := range texts {
			results[i] = readValues([]byte(text))
		}
		out = results
	} else {
		out = readValues(input)
	}
	encoded, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helmyaml: encoding JSON:", err)
		os.Exit(2)
	}
	os.Stdout.Write(append(encoded, '\n'))
}
