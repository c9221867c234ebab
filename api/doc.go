// Package api holds concord.txt, the list of every exported identifier of
// the module's public packages with its signature, and the test that keeps
// it true: an API change shows as a diff of that file, made on purpose with
//
//	go test ./api -update
//
// In the spirit of Go's own api/ directory. Internal packages, commands and
// examples are not part of the API.
package api
