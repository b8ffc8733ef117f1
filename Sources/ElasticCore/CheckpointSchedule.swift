/// When the controller asks for a checkpoint and when one is complete. Pure: the controller
/// feeds it commits, writers' reports and membership, and carries out what it returns.
///
/// A checkpoint is taken after `every` committed steps and at the end of the job: the first
/// replica of each stage snapshots its layers (the state after the last committed step) and
/// writes them in the background; when every stage's part is written, the controller makes the
/// checkpoint visible. Only one checkpoint is written at a time: one that comes due while the
/// previous one is still being written is skipped, and one whose writer left before writing is
/// abandoned; neither can leave a checkpoint that looks valid.
public struct CheckpointSchedule: Sendable, Equatable {
    public struct Pending: Sendable, Equatable {
        /// Steps applied when the snapshot is taken (the data cursor).
        public var step: Int
        public var generation: Generation
        /// The writer of each stage.
        public var writers: [Int: NodeID]
        public var written: Set<Int> = []
        public var rawBytes: UInt64 = 0
        public var storedBytes: UInt64 = 0
    }

    public enum Decision: Sendable, Equatable {
        /// Ask each stage's writer for its part of the checkpoint at `step`.
        case request(step: Int, writers: [Int: NodeID])
        /// A checkpoint came due and was not taken.
        case skipped(step: Int, reason: String)
        /// Every part is written: make the checkpoint visible.
        case complete(Pending)
        /// The checkpoint will not complete; its parts are left for pruning.
        case abandoned(step: Int, reason: String)
    }

    /// Steps between checkpoints (nil: only at the end).
    public let every: Int?
    public private(set) var pending: Pending?
    /// Steps applied at the newest committed checkpoint, and its directory.
    public private(set) var newest: (step: Int, path: String)?
    /// The last step's checkpoint, due while another was being written: it is requested as soon
    /// as that one ends (the job's final state is never left without a checkpoint).
    public private(set) var deferredFinal: Int?

    public init(every: Int?) {
        self.every = every
    }

    public static func == (lhs: CheckpointSchedule, rhs: CheckpointSchedule) -> Bool {
        lhs.every == rhs.every && lhs.pending == rhs.pending && lhs.deferredFinal == rhs.deferredFinal
            && lhs.newest?.step == rhs.newest?.step && lhs.newest?.path == rhs.newest?.path
    }

    /// Step `applied - 1` committed under `plan`: a checkpoint is due after every `every` steps
    /// and after the last step.
    public mutating func onCommitted(applied: Int, totalSteps: Int, plan: Plan) -> Decision? {
        let due = applied == totalSteps || (every.map { applied % $0 == 0 } ?? false)
        guard due, applied > (newest?.step ?? 0) else { return nil }
        if let pending {
            if applied == totalSteps {
                deferredFinal = applied
                return .skipped(step: applied, reason: "deferred until the checkpoint of step \(pending.step) is written")
            }
            return .skipped(step: applied, reason: "the checkpoint of step \(pending.step) is still being written")
        }
        let writers = Dictionary(uniqueKeysWithValues: plan.nodes.enumerated().map { ($0.offset, $0.element[0]) })
        pending = Pending(step: applied, generation: plan.generation, writers: writers)
        return .request(step: applied, writers: writers)
    }

    /// A writer's report for its stage.
    public mutating func onWritten(node: NodeID, step: Int, stage: Int, error: String?, rawBytes: UInt64, storedBytes: UInt64) -> Decision? {
        guard var current = pending, current.step == step, current.writers[stage] == node else { return nil }
        if let error {
            pending = nil
            return .abandoned(step: step, reason: "\(node) could not write stage \(stage): \(error)")
        }
        guard current.written.insert(stage).inserted else { return nil }
        current.rawBytes += rawBytes
        current.storedBytes += storedBytes
        if current.written.count == current.writers.count {
            pending = nil
            return .complete(current)
        }
        pending = current
        return nil
    }

    /// The members changed: a writer that is gone before writing its part abandons the checkpoint.
    public mutating func onMembership(live: Set<NodeID>) -> Decision? {
        guard let current = pending else { return nil }
        let lost = current.writers.filter { !current.written.contains($0.key) && !live.contains($0.value) }
        guard let (stage, node) = lost.min(by: { $0.key < $1.key }) else { return nil }
        pending = nil
        return .abandoned(step: current.step, reason: "\(node), the writer of stage \(stage), is gone")
    }

    /// Requests the deferred final checkpoint once nothing is being written (call after a
    /// checkpoint completes or is abandoned).
    public mutating func resumeDeferred(plan: Plan) -> Decision? {
        guard let step = deferredFinal, pending == nil else { return nil }
        deferredFinal = nil
        let writers = Dictionary(uniqueKeysWithValues: plan.nodes.enumerated().map { ($0.offset, $0.element[0]) })
        pending = Pending(step: step, generation: plan.generation, writers: writers)
        return .request(step: step, writers: writers)
    }

    /// The controller made the checkpoint at `step` visible at `path` (or found it at startup).
    public mutating func onCommitted(checkpoint step: Int, path: String) {
        if step >= (newest?.step ?? -1) { newest = (step, path) }
    }
}
