import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticWire
import Foundation
import Logging

/// The controller's side of checkpoints for one job: the schedule (pure), the store on disk,
/// making a checkpoint visible once every stage's part is written, retention, and finding the
/// checkpoint a job resumes from.
struct ControllerCheckpoints {
    var schedule: CheckpointSchedule
    let store: CheckpointStore
    let keep: Int
    /// Checkpoints made visible by this controller, oldest first (for status).
    var written: [CheckpointSummary] = []
    /// When the pending checkpoint was requested.
    var requestedAt: Timestamp?
    /// For each checkpoint committed here: when, and how long from the request.
    var timings: [Int: (at: Timestamp, took: Duration)] = [:]
    /// Checkpoints that failed since the last one that was committed, in all, and the last one's
    /// step and reason: what `elastic status`, the dashboard and `/metrics` show of a full disk.
    private(set) var failures: (inARow: Int, total: Int, last: (step: Int, reason: String)?) = (0, 0, nil)
    /// When the newest valid checkpoint was written (wall clock), when known.
    private(set) var newestWrittenAt: Date?

    init?(job: JobSpec) {
        guard let settings = job.checkpoint, let directory = settings.directory else { return nil }
        schedule = CheckpointSchedule(every: settings.every)
        store = CheckpointStore(root: directory)
        keep = settings.keep ?? JobSpec.Checkpoint.defaultKeep
    }

    /// The checkpoint of `step` was not made.
    mutating func failed(step: Int, reason: String) {
        failures = (failures.inARow + 1, failures.total + 1, (step, reason))
    }

    /// A checkpoint was committed (written `at`, now or found on disk).
    mutating func committed(at date: Date) {
        failures.inARow = 0
        newestWrittenAt = date
    }

    /// After the newest checkpoint was taken from the journal or a restore: when it was written,
    /// read from its manifest.
    mutating func findNewestWriteTime() {
        guard let newest = schedule.newest, let summary = try? store.list().last(where: { $0.step == newest.step }),
              let milliseconds = summary.createdAt else { return }
        newestWrittenAt = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// The newest valid checkpoint and the failures since, for `elastic status`.
    func health(now: Date) -> TrainingStatus.CheckpointHealth {
        TrainingStatus.CheckpointHealth(
            newestStep: schedule.newest.map { UInt64($0.step) },
            newestAgeMilliseconds: newestWrittenAt.map { UInt64(max(0, now.timeIntervalSince($0)) * 1000) },
            consecutiveFailures: UInt32(clamping: failures.inARow), failures: UInt32(clamping: failures.total),
            lastFailure: failures.last.map { .init(step: UInt64($0.step), reason: $0.reason) })
    }

    /// Removes, in the background, the `.incoming-*` directories of the steps `discarded`
    /// selects: checkpoints that will never be committed, whose partial blobs would otherwise
    /// keep a full disk full. A writer still busy with such a step fails on its next file and
    /// reports it; a directory recreated by a late writer goes with the sweep at the next
    /// request.
    func discardIncoming(_ discarded: @escaping @Sendable (Int) -> Bool, logger: Logger) {
        let store = self.store
        Task.detached(priority: .utility) {
            do {
                for step in try store.incomingSteps() where discarded(step) {
                    try store.discardIncoming(step: step)
                    logger.info("removed the partial checkpoint of step \(step) (\(store.incomingDirectory(step: step)))")
                }
            } catch {
                logger.error("cannot remove partial checkpoints in \(store.root): \(error)")
            }
        }
    }

    /// A fingerprint of what a checkpoint's state depends on (the model and the optimizer), so
    /// that a restore onto another model is refused: FNV-1a 64 of their canonical JSON.
    static func specHash(_ job: JobSpec) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var hash = FNV1a64()
        for part in [try? encoder.encode(job.model), try? encoder.encode(job.optimizer)] {
            hash.combine(String(decoding: part ?? Data(), as: UTF8.self))
        }
        return String(format: "%016llx", hash.value)
    }

    /// Makes the checkpoint of `pending` visible (manifest last, fsynced, atomic rename, then
    /// `latest`).
    func commit(_ pending: CheckpointSchedule.Pending, job: AcceptedJob, plan: Plan?) throws -> CheckpointSummary {
        let spec = job.spec
        let perEpoch = spec.stepsPerEpoch(samples: job.samples)
        let stages = (plan?.stages ?? []).enumerated().map { index, range in
            CheckpointPlan.Stage(firstLayer: range.lowerBound, lastLayer: range.upperBound - 1, replicas: plan?.replicas ?? 1,
                                 members: plan?.nodes[index].map(\.value) ?? [])
        }
        let header = CheckpointHeader(
            generation: pending.generation.value, jobName: spec.name, jobSpecHash: Self.specHash(spec),
            dataCursor: CheckpointDataCursor(epoch: pending.step / perEpoch, offset: (pending.step % perEpoch) * spec.batch, samplesConsumed: pending.step * spec.batch),
            plan: CheckpointPlan(stages: stages))
        return try store.commit(step: pending.step, header: header, layerCount: spec.model.layers.count)
    }

    /// The checkpoint a job starts from: `request` is `latest` (the newest valid one in the
    /// store) or a step directory (that one, or the newest valid one before it when it fails
    /// verification). Every checkpoint passed over is logged with what failed. A checkpoint of
    /// another model is refused.
    static func findResume(_ request: String, job: JobSpec, store: CheckpointStore?, logger: Logger) throws -> (step: Int, path: String) {
        let root: CheckpointStore
        var newestAllowed = Int.max
        if request == "latest" {
            guard let store else { throw ElasticError("checkpoint.resume: latest needs checkpoint.directory") }
            root = store
        } else {
            let url = URL(fileURLWithPath: request)
            guard let step = CheckpointLayout.step(fromDirectoryName: url.lastPathComponent) else {
                throw ElasticError("\(request) is not a checkpoint directory (step-NNNNNNNN); 'elastic checkpoint list DIR' shows them")
            }
            root = CheckpointStore(root: url.deletingLastPathComponent().path)
            newestAllowed = step
        }
        let candidates = try root.list().filter { $0.step <= newestAllowed }.reversed()
        for candidate in candidates {
            let verification = CheckpointReader.verify(directory: candidate.path)
            guard verification.isValid, let manifest = verification.manifest else {
                let problems = verification.problems.map(\.description).joined(separator: "; ")
                logger.error("checkpoint \(candidate.path) fails verification, skipped: \(problems)")
                continue
            }
            let layers = manifest.blobs.sorted { $0.layer < $1.layer }.map(\.spec)
            guard layers == job.modelSpec.layers else {
                logger.error("checkpoint \(candidate.path) is of another model (layers \(layers.map { "\($0.fanIn)→\($0.fanOut)" }.joined(separator: ", "))), skipped")
                continue
            }
            if manifest.jobSpecHash != specHash(job) {
                logger.warning("checkpoint \(candidate.path) was written under another optimizer setting (spec hash \(manifest.jobSpecHash), this job \(specHash(job))); its state is used as it is")
            }
            return (manifest.step, candidate.path)
        }
        throw ElasticError("no valid checkpoint to resume from in \(root.root)\(newestAllowed == .max ? "" : " at or before step \(newestAllowed)"); 'elastic checkpoint list \(root.root)' shows what is there")
    }
}
