package sandbox

import (
	"errors"
	"io/fs"
	"os"
)

// symlink replaces whatever is at link with a symlink to target, so Build
// can run again over an existing sandbox.
func symlink(target, link string) error {
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Symlink(target, link)
}
