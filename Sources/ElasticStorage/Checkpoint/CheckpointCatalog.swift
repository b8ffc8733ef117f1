/// One line of `CheckpointStore.list()`.
public struct CheckpointSummary: Sendable, Equatable {
    public var step: Int
    /// `step-00000120`.
    public var name: String
    public var path: String
    /// Milliseconds since the epoch; nil when the manifest is unreadable.
    public var createdAt: Int64?
    public var generation: UInt64?
    public var layerCount: Int
    /// Raw tensor bytes and blob bytes (0 when the manifest is unreadable).
    public var rawBytes: Int
    public var storedBytes: Int
    /// The structural check passed (manifest valid, every blob present with its recorded size;
    /// checksums are not read: `CheckpointReader.verify` does that).
    public var isValid: Bool
    /// The first problem, when not valid.
    public var problem: String?
    /// `latest` names this checkpoint.
    public var isLatest: Bool

    /// raw ÷ stored bytes (0 when unknown).
    public var ratio: Double { storedBytes > 0 ? Double(rawBytes) / Double(storedBytes) : 0 }

    init(manifest: CheckpointManifest, path: String, isValid: Bool, problem: String?, isLatest: Bool) {
        step = manifest.step
        name = CheckpointLayout.stepDirectoryName(step: manifest.step)
        self.path = path
        createdAt = manifest.createdAt
        generation = manifest.generation
        layerCount = manifest.layerCount
        rawBytes = manifest.rawBytes
        storedBytes = manifest.storedBytes
        self.isValid = isValid
        self.problem = problem
        self.isLatest = isLatest
    }

    init(step: Int, path: String, problem: String, isLatest: Bool) {
        self.step = step
        name = CheckpointLayout.stepDirectoryName(step: step)
        self.path = path
        createdAt = nil
        generation = nil
        layerCount = 0
        rawBytes = 0
        storedBytes = 0
        isValid = false
        self.problem = problem
        self.isLatest = isLatest
    }
}

/// A checkpoint that restore passed over, and why (the caller prints these).
public struct SkippedCheckpoint: Sendable, Equatable, CustomStringConvertible {
    /// The directory name (`step-00000130`), or `latest` for a bad pointer.
    public var name: String
    public var reason: String
    /// The verification problems, when it failed verification.
    public var problems: [CheckpointProblem]

    public var description: String { "\(name): \(reason)" }
}

/// What restore chose: the newest valid checkpoint (nil when there is none) and the ones it
/// passed over on the way, newest first.
public struct CheckpointSelection<Chosen: Sendable>: Sendable {
    public var chosen: Chosen?
    public var skipped: [SkippedCheckpoint]
}

extension CheckpointStore {
    /// The names in the root directory (empty when it does not exist).
    func entries() throws(CheckpointError) -> [String] {
        do throws(DatasetError) {
            return try directoryEntries(root) ?? []
        } catch {
            throw CheckpointError(io: error, doing: "cannot list the checkpoint directory \(root)")
        }
    }

    /// The committed step directories (`step-*`, whatever their state), newest first.
    func committedSteps() throws(CheckpointError) -> [Int] {
        try entries().compactMap { CheckpointLayout.step(fromDirectoryName: $0) }.sorted(by: >)
    }

    /// What `latest` holds (trimmed), or nil when there is no `latest` file or it cannot be read.
    public func readLatest() -> String? {
        guard let bytes = try? readSmallFile(latestPath, limit: 256, missing: { DatasetError(.manifestMissing, "\($0) is missing", path: $0) }) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        return String(text.drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }

    /// Every committed checkpoint (`step-*`; `.incoming-*` is never listed), oldest first, with
    /// a structural check (see `CheckpointSummary.isValid`).
    public func list() throws(CheckpointError) -> [CheckpointSummary] {
        let latest = readLatest()
        return try committedSteps().reversed().map { step in
            let name = CheckpointLayout.stepDirectoryName(step: step)
            let path = joinPath(root, name)
            let verification = CheckpointReader.verify(directory: path, depth: .structure)
            guard let manifest = verification.manifest else {
                return CheckpointSummary(step: step, path: path, problem: verification.problems.first?.description ?? "no manifest", isLatest: latest == name)
            }
            return CheckpointSummary(manifest: manifest, path: path, isValid: verification.isValid,
                                     problem: verification.problems.first?.description, isLatest: latest == name)
        }
    }

    /// The structural summary of one committed step, or nil when there is no `step-<step>`.
    public func summary(step: Int) throws(CheckpointError) -> CheckpointSummary? {
        try list().first { $0.step == step }
    }

    /// `CheckpointReader.verify` of `step-<step>`.
    public func verify(step: Int, depth: CheckpointVerification.Depth = .full) -> CheckpointVerification {
        CheckpointReader.verify(directory: directory(step: step), depth: depth)
    }

    /// `CheckpointReader.load` of `step-<step>`.
    public func load(step: Int, layers: Set<Int>? = nil) throws(CheckpointError) -> LoadedCheckpoint {
        try CheckpointReader.load(directory: directory(step: step), layers: layers)
    }

    /// The checkpoint restore would use: the one `latest` names if it verifies fully, else the
    /// newest older `step-*` that does (see `restoreCandidates`). Reads every blob of each
    /// candidate it tries.
    public func newestValid() throws(CheckpointError) -> CheckpointSelection<CheckpointVerification> {
        let (candidates, skippedUpFront) = try restoreCandidates()
        var skipped = skippedUpFront
        for step in candidates {
            let path = directory(step: step)
            let verification = CheckpointReader.verify(directory: path, depth: .full)
            if verification.isValid { return CheckpointSelection(chosen: verification, skipped: skipped) }
            skipped.append(Self.skip(step, verification.problems))
        }
        return CheckpointSelection(chosen: nil, skipped: skipped)
    }

    /// `newestValid()` and `CheckpointReader.load` in one pass: loads `layers` (nil: all) of the
    /// newest checkpoint that loads without a problem. Only the layers asked for are checked.
    public func loadNewestValid(layers: Set<Int>? = nil) throws(CheckpointError) -> CheckpointSelection<LoadedCheckpoint> {
        let (candidates, skippedUpFront) = try restoreCandidates()
        var skipped = skippedUpFront
        for step in candidates {
            do throws(CheckpointError) {
                let loaded = try CheckpointReader.load(directory: directory(step: step), layers: layers)
                return CheckpointSelection(chosen: loaded, skipped: skipped)
            } catch {
                if error.kind == .invalidArgument { throw error }
                skipped.append(SkippedCheckpoint(name: CheckpointLayout.stepDirectoryName(step: step), reason: error.message, problems: []))
            }
        }
        return CheckpointSelection(chosen: nil, skipped: skipped)
    }

    /// The steps restore tries, in order, and those it passes over without reading:
    /// - `latest` names an existing `step-N`: N first, then every older step, newest first.
    ///   Newer steps are passed over: their commit crashed before moving `latest`, so the
    ///   controller never recorded them.
    /// - `latest` is missing, unreadable, or names a directory that does not exist: every step,
    ///   newest first.
    func restoreCandidates() throws(CheckpointError) -> (steps: [Int], skipped: [SkippedCheckpoint]) {
        let steps = try committedSteps()
        var skipped: [SkippedCheckpoint] = []
        guard let latest = readLatest() else { return (steps, skipped) }
        guard let latestStep = CheckpointLayout.step(fromDirectoryName: latest) else {
            skipped.append(SkippedCheckpoint(name: CheckpointLayout.latestName, reason: "`latest` holds '\(latest.prefix(40))', not a checkpoint name; trying every checkpoint, newest first", problems: []))
            return (steps, skipped)
        }
        guard steps.contains(latestStep) else {
            skipped.append(SkippedCheckpoint(name: latest, reason: "`latest` names \(latest), which does not exist; trying every checkpoint, newest first", problems: []))
            return (steps, skipped)
        }
        for step in steps where step > latestStep {
            skipped.append(SkippedCheckpoint(name: CheckpointLayout.stepDirectoryName(step: step), reason: "newer than `latest` (\(latest)): its commit did not finish", problems: []))
        }
        return ([latestStep] + steps.filter { $0 < latestStep }, skipped)
    }

    static func skip(_ step: Int, _ problems: [CheckpointProblem]) -> SkippedCheckpoint {
        let first = problems.first?.description ?? "invalid"
        let more = problems.count > 1 ? " (and \(problems.count - 1) more problem\(problems.count > 2 ? "s" : ""))" : ""
        return SkippedCheckpoint(name: CheckpointLayout.stepDirectoryName(step: step), reason: first + more, problems: problems)
    }
}
