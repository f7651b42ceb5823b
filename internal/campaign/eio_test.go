package campaign

import "testing"

func runEIO(t *testing.T, bin string, k knobs, sum *summary) { t.Skip("todo") }
