package campaign

import "testing"

func runENOSPC(t *testing.T, bin string, k knobs, sum *summary) { t.Skip("todo") }
