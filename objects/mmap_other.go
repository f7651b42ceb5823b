//go:build !linux

package objects

const mmapFlags = 0
