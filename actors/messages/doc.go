// Package messages holds every troupe actor message that may cross a process,
// generated from troupe.proto (protobuf API v2, so protoactor's remote can
// look them up by full name). Every binary that hosts troupe actors must link
// this package.
package messages

//go:generate protoc --go_out=. --go_opt=paths=source_relative troupe.proto
