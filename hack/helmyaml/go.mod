module github.com/canopy-operator/canopy-operator/hack/helmyaml

go 1.22

// The versions Helm v3.22.0 resolves (its go.mod): sigs.k8s.io/yaml v1.6.0 over go.yaml.in/yaml/v2 v2.4.4.
require (
	go.yaml.in/yaml/v2 v2.4.4 // indirect
	sigs.k8s.io/yaml v1.6.0
)
