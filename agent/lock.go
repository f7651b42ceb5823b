package agent

import "github.com/kubekeep/kubekeep/rsyncish"

// LockFile is the agent's lock at the top of the store
// (rsyncish.AgentLockFile, taken by rsyncish.AgentFiles.Lock). The store's
// own writer lock is taken per operation (one backup, one prune), so two
// agents would interleave happily and double every job; this one is held
// for the agent's whole life.
const LockFile = rsyncish.AgentLockFile

// ErrAgentRunning: another agent holds the store.
var ErrAgentRunning = rsyncish.ErrAgentRunning
