package objects

import "golang.org/x/sys/unix"

// Indexing touches the head of nearly every value, i.e. nearly every page.
// Faulting them in one by one costs 14 s cold and 0.8 s warm on a 1.1 GiB
// snapshot here; MAP_POPULATE lets the kernel read the file sequentially
// up front: 1.1 s cold, 0.03 s warm (see scripts/bench-objects.sh).
const mmapFlags = unix.MAP_POPULATE
