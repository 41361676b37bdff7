module github.com/bulkhead/bulkhead

go 1.26.8

require (
	github.com/rogpeppe/go-internal v1.14.1 // indirect
	go.yaml.in/yaml/v3 v3.0.4 // indirect
)
