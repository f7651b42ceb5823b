package agent

import "github.com/kubekeep/kubekeep/rsyncish"

// Directory forms of the status and lock helpers, for the tests that work
// on a bare directory (not a store): the agent itself goes through its
// store's rsyncish.AgentFiles, and these reach the same methods.

// statusTempPrefix starts the temp names of status writes
// (rsyncish.AgentFiles.WriteStatus: the store's convention,
// .agent-status.json.tmp-<pid>-<rand>).
const statusTempPrefix = "." + StatusFile + ".tmp-"

func writeStatusFile(dir string, st *FileState) error {
	return writeStatusTo(rsyncish.AgentFilesIn(dir), st)
}

func removeStatusTemps(dir string) { _ = rsyncish.AgentFilesIn(dir).RemoveStatusTemps() }

func agentRunning(dir string) (bool, int) { return rsyncish.AgentFilesIn(dir).Running() }
