/// What `prune` did.
public struct CheckpointPruneReport: Sendable, Equatable {
    /// Valid checkpoints kept, newest first.
    public var kept: [String] = []
    /// Checkpoints removed (valid ones beyond the newest K, invalid ones older than the newest
    /// valid), newest first.
    public var removed: [String] = []
    /// Invalid checkpoints newer than the newest valid one, left for inspection.
    public var keptInvalid: [String] = []
    /// `.incoming-*` directories of steps at or below the newest committed step, and leftover
    /// `.deleting-*` directories, removed.
    public var removedIncoming: [String] = []
    /// Why nothing was removed, when nothing was.
    public var note: String?
}

extension CheckpointStore {
    /// Keeps exactly the newest `keep` valid checkpoints and removes older ones, and invalid
    /// ones older than the newest valid one; also removes `.incoming-*` directories whose step
    /// is at or below the newest committed step (writes that will never be committed). The
    /// newest valid checkpoint and the one `latest` names are never removed. When no checkpoint
    /// is valid, nothing at all is removed.
    ///
    /// Validity is checked newest first, only until `keep` valid ones are found (everything
    /// older goes either way), at `depth` (`.storedChecksums` by default: every byte of those
    /// checkpoints is read once, so a damaged one never counts toward `keep`).
    ///
    /// A checkpoint is removed by renaming it to `.deleting-<step>` first, so a crash midway
    /// never leaves a half-deleted `step-*`.
    @discardableResult
    public func prune(keep: Int, depth: CheckpointVerification.Depth = .storedChecksums) throws(CheckpointError) -> CheckpointPruneReport {
        guard keep >= 1 else {
            throw CheckpointError(.invalidArgument, "retention must keep at least 1 checkpoint, not \(keep)")
        }
        var report = CheckpointPruneReport()
        let steps = try committedSteps()
        let latest = readLatest().flatMap(CheckpointLayout.step(fromDirectoryName:))

        var validFound = 0
        var newestValid: Int?
        var toRemove: [Int] = []
        for step in steps {
            let name = CheckpointLayout.stepDirectoryName(step: step)
            if validFound >= keep {
                if step == latest, CheckpointReader.verify(directory: directory(step: step), depth: depth).isValid {
                    report.kept.append(name)
                } else {
                    toRemove.append(step)
                }
                continue
            }
            if CheckpointReader.verify(directory: directory(step: step), depth: depth).isValid {
                validFound += 1
                if newestValid == nil { newestValid = step }
                report.kept.append(name)
            } else if newestValid == nil {
                report.keptInvalid.append(name)
            } else {
                toRemove.append(step)
            }
        }
        guard newestValid != nil else {
            report.kept = []
            report.note = steps.isEmpty ? "no checkpoints" : "no valid checkpoint: nothing removed"
            return report
        }
        for step in toRemove {
            try remove(step: step)
            report.removed.append(CheckpointLayout.stepDirectoryName(step: step))
        }
        // Writes that can no longer be committed, and deletions a crash interrupted.
        let newestCommitted = steps.first ?? -1
        for name in try entries() {
            let stale: Bool
            if let step = CheckpointLayout.step(fromIncomingName: name) {
                stale = step <= newestCommitted
            } else {
                stale = CheckpointLayout.step(fromDeletingName: name) != nil
            }
            guard stale else { continue }
            do throws(DatasetError) {
                try CheckpointFiles.removeTree(joinPath(root, name))
            } catch {
                throw CheckpointError(io: error, doing: "cannot remove \(joinPath(root, name))")
            }
            report.removedIncoming.append(name)
        }
        if report.removed.isEmpty && report.removedIncoming.isEmpty { report.note = "nothing to remove" }
        return report
    }

    /// Renames `step-<step>` out of sight (`.deleting-<step>`, fsync of the root), then deletes it.
    private func remove(step: Int) throws(CheckpointError) {
        let hidden = joinPath(root, CheckpointLayout.deletingDirectoryName(step: step))
        do throws(DatasetError) {
            try CheckpointFiles.removeTree(hidden)
            try CheckpointFiles.rename(directory(step: step), hidden)
            try syncDirectory(root)
            try CheckpointFiles.removeTree(hidden)
        } catch {
            throw CheckpointError(io: error, doing: "cannot remove checkpoint \(directory(step: step))")
        }
    }
}
