import ElasticCore
import ElasticStorage
import ElasticWire
import Foundation
import Logging

/// A job the controller accepted: the spec, its bytes (sent to workers as they are), and the
/// data set's size (read from its manifest, which the controller validated).
struct AcceptedJob: Sendable {
    let spec: JobSpec
    let json: [UInt8]
    let samples: Int

    /// Decodes, validates, and checks the data set against the model before any training starts:
    /// the job file, the shards' checksums and the feature count are refused here with errors
    /// that say what is wrong.
    static func load(json: [UInt8], baseDirectory: URL? = nil) throws -> AcceptedJob {
        var spec: JobSpec
        do {
            spec = try JSONDecoder().decode(JobSpec.self, from: Data(json))
        } catch let DecodingError.keyNotFound(key, context) {
            throw ElasticError("job file: missing field '\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))'")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw ElasticError("job file: field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type: \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            throw ElasticError("job file: not valid JSON (\(context.debugDescription)\(context.codingPath.isEmpty ? "" : " at " + context.codingPath.map(\.stringValue).joined(separator: ".")))")
        } catch {
            throw ElasticError("job file: \(error)")
        }
        if let problem = spec.problem() { throw ElasticError("job file: \(problem)") }
        if let baseDirectory, !spec.data.path.hasPrefix("/") {
            spec.data.path = baseDirectory.appendingPathComponent(spec.data.path).standardizedFileURL.path
        }
        if var checkpoint = spec.checkpoint {
            // Workers write where the controller commits: one absolute path for all.
            let directory = checkpoint.directory ?? JobSpec.Checkpoint.defaultDirectory
            let base = baseDirectory ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            checkpoint.directory = directory.hasPrefix("/") ? directory : base.appendingPathComponent(directory).standardizedFileURL.path
            if let resume = checkpoint.resume, resume != "latest", !resume.hasPrefix("/") {
                checkpoint.resume = base.appendingPathComponent(resume).standardizedFileURL.path
            }
            spec.checkpoint = checkpoint
        }
        let dataset: Dataset
        do {
            dataset = try Dataset.open(spec.data.path)
        } catch {
            throw ElasticError("data set \(spec.data.path): \(error)")
        }
        if let problem = datasetMismatch(spec: spec, features: dataset.featureCount, classes: dataset.classes, samples: dataset.sampleCount) {
            throw ElasticError("data set \(spec.data.path): \(problem)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return AcceptedJob(spec: spec, json: Array(try encoder.encode(spec)), samples: dataset.sampleCount)
    }

    static func datasetMismatch(spec: JobSpec, features: Int, classes: Int, samples: Int) -> String? {
        if features != spec.model.inputs {
            return "it has \(features) features, the model's first layer expects \(spec.model.inputs)"
        }
        let outputs = spec.model.layers.last?.outputs ?? 0
        if classes > outputs {
            return "it has \(classes) classes, the model's last layer has only \(outputs) outputs"
        }
        if samples < spec.batch {
            return "it has \(samples) samples, fewer than one batch of \(spec.batch)"
        }
        return nil
    }
}

/// The ledger on disk: one JSON line per committed step in `<data-dir>/ledger.jsonl`, for
/// people and scripts. The journal is the record of truth; a line the controller could not
/// write before it was killed is written when it starts again (`catchUp`).
final class LedgerFile: @unchecked Sendable {
    private let handle: FileHandle?
    private let file: URL
    private let formatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    init(file: URL) {
        self.file = file
        if !FileManager.default.fileExists(atPath: file.path) {
            _ = FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        _ = chmod(file.path, 0o600)
        handle = try? FileHandle(forWritingTo: file)
        _ = try? handle?.seekToEnd()
    }

    /// Appends the journal's committed steps that come after the file's last line of `job` (a
    /// crash between the journal and this file), so that the file lists every committed step.
    func catchUp(with ledger: [DurableState.Step], job: String) -> Int {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        var last = -1
        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], object["job"] as? String == job else { continue }
            if let step = object["step"] as? Int { last = step } else if let back = object["rollbackTo"] as? Int { last = back - 1 }
        }
        let missing = ledger.filter { $0.step > last }
        for step in missing { append(step.entry(committedAt: .zero), job: job) }
        return missing.count
    }

    func append(_ entry: LedgerEntry, job: String) {
        let fields: [String: Any] = [
            "job": job, "step": entry.step, "epoch": entry.epoch, "nextSample": entry.nextSample,
            "loss": entry.loss, "generation": entry.generation.value, "replicasAgree": entry.replicasAgree,
            "time": formatter.string(from: Date()),
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        try? handle?.write(contentsOf: data + Data("\n".utf8))
    }

    /// Training went back to a checkpoint: the steps from `toStep` on are committed again.
    func appendRollback(toStep: Int, fromStep: Int, checkpoint: String, job: String) {
        let fields: [String: Any] = [
            "job": job, "rollbackTo": toStep, "rolledBackFrom": fromStep, "checkpoint": checkpoint,
            "time": formatter.string(from: Date()),
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        try? handle?.write(contentsOf: data + Data("\n".utf8))
    }

    func close() {
        try? handle?.synchronize()
        try? handle?.close()
    }
}

/// What the controller tracks of a running job, besides the coordinator.
struct ControllerTraining {
    var coordinator: TrainingCoordinator
    let job: AcceptedJob
    var lastLog: Timestamp = .zero
    /// Nil when the job takes no checkpoints.
    var checkpoints: ControllerCheckpoints?
    /// Each slot's gradient exchange in its last reported step.
    var traffic: [NodeID: TrainingStatus.Traffic] = [:]
    /// Whether the journal already holds this job (it was recovered from it).
    private(set) var journaled = false

    /// The job as the journal keeps it.
    var durableJob: DurableState.Job {
        DurableState.Job(json: String(decoding: job.json, as: UTF8.self), samples: job.samples,
                         resumeStep: coordinator.resumeStep, resumePath: coordinator.checkpoint?.path)
    }

    /// The job a starting controller runs: the one its journal holds (after a crash or a
    /// restart), else the `--job` file's. A journal's unfinished job is never silently
    /// replaced: a `--job` file that describes another job is refused, and `--restore` (an
    /// explicit request to start from a checkpoint) starts the file's job afresh.
    static func starting(job: AcceptedJob?, restore: String?, durable: DurableState, logger: Logger) throws -> ControllerTraining? {
        if restore == nil, let recorded = durable.job {
            let recovered: AcceptedJob
            do {
                recovered = try AcceptedJob.load(json: Array(recorded.json.utf8))
            } catch {
                throw ElasticError("the journal's job can no longer be loaded: \(error); fix that, or start with --restore to begin from a checkpoint")
            }
            if let job, job.json != recovered.json {
                if durable.jobEnded == nil {
                    throw ElasticError("the journal holds job '\(recovered.spec.name)' at step \(durable.nextStep) of \(recovered.spec.totalSteps(samples: recovered.samples)), unfinished, and --job names a different job; start the controller without --job (or with the same file) to continue it, or with --restore to start the file's job from a checkpoint")
                }
            } else {
                var training = try ControllerTraining(job: recovered, recovering: durable, logger: logger)
                training.journaled = true
                return training
            }
        }
        guard let job else { return nil }
        return try ControllerTraining(job: job, restore: restore, logger: logger)
    }

    /// A job continued from the journal: its ledger, its holders and its newest checkpoint.
    init(job: AcceptedJob, recovering durable: DurableState, logger: Logger) throws {
        self.job = job
        self.coordinator = TrainingCoordinator(job: job.spec, samples: job.samples)
        self.checkpoints = ControllerCheckpoints(job: job.spec)
        let newest = durable.checkpoints.last.map { (step: $0.step, path: $0.path) }
            ?? durable.job?.resumePath.map { (step: durable.job?.resumeStep ?? 0, path: $0) }
        coordinator.recover(
            // Steps from before the restart have no time here (`.zero`): throughput counts new ones.
            ledger: durable.ledger.map { $0.entry(committedAt: .zero) }, resumeStep: durable.resumeStep,
            rolledBackSteps: durable.rolledBackSteps, holders: durable.holders?.holders, checkpoint: newest)
        if let newest { checkpoints?.schedule.onCommitted(checkpoint: newest.step, path: newest.path) }
        checkpoints?.findNewestWriteTime()
        checkpoints?.discardIncoming({ _ in true }, logger: logger)
        let state = durable.jobEnded.map { " (\($0))" } ?? ""
        logger.info("job '\(job.spec.name)' continues from the journal at step \(coordinator.nextStep) of \(coordinator.totalSteps)\(state)")
    }

    /// Every reported step's exchange, summed over slots (for `/metrics`).
    var trafficTotal = TrafficTotal()
    /// When the controller took this job.
    let createdAt = MonotonicClock.now()
    /// Recoveries so far: from a membership change that interrupted running training (a re-plan,
    /// or a wait for members) to the next committed step.
    var recoveries: [Recovery] = []
    /// The recovery under way, if any.
    var recovering: (reason: String, fromStep: Int, since: Timestamp)?

    struct Recovery: Sendable {
        var reason: String
        /// The step that was next when training was interrupted.
        var fromStep: Int
        /// The committed step that ended it.
        var step: Int
        var startedAt: Timestamp
        var endedAt: Timestamp
        var duration: Duration { endedAt.since(startedAt) }
    }

    struct TrafficTotal: Sendable {
        var bytesSent: UInt64 = 0
        var bytesReceived: UInt64 = 0
        var uncompressedBytes: UInt64 = 0

        mutating func add(_ traffic: TrainingStatus.Traffic) {
            bytesSent &+= traffic.bytesSent
            bytesReceived &+= traffic.bytesReceived
            uncompressedBytes &+= traffic.uncompressedBytes
        }
    }

    /// Follows the phase across one coordinator input: running training that stops running (a
    /// re-plan, a rollback, a wait for members) starts a recovery; `reason` is what changed.
    mutating func noteTransition(from before: TrainingCoordinator.Phase, reason: @autoclosure () -> String, now: Timestamp) {
        let after = coordinator.phase.name
        guard recovering == nil, before == .running, after == "assigning" || after == "waiting" else { return }
        recovering = (reason(), coordinator.nextStep, now)
    }

    /// A step committed: it ends the recovery under way, which is returned.
    mutating func noteCommit(step: Int, now: Timestamp) -> Recovery? {
        guard let recovering else { return nil }
        self.recovering = nil
        let recovery = Recovery(reason: recovering.reason, fromStep: recovering.fromStep, step: step, startedAt: recovering.since, endedAt: now)
        recoveries.append(recovery)
        return recovery
    }

    /// `restore`: `latest` or a checkpoint directory to start from (overrides the job's
    /// `checkpoint.resume`).
    init(job: AcceptedJob, restore: String? = nil, logger: Logger) throws {
        self.job = job
        self.coordinator = TrainingCoordinator(job: job.spec, samples: job.samples)
        self.checkpoints = ControllerCheckpoints(job: job.spec)
        if let request = restore ?? job.spec.checkpoint?.resume {
            let found = try ControllerCheckpoints.findResume(request, job: job.spec, store: checkpoints?.store, logger: logger)
            coordinator.resume(from: found.step, path: found.path)
            checkpoints?.schedule.onCommitted(checkpoint: found.step, path: found.path)
            checkpoints?.findNewestWriteTime()
            logger.info("job '\(job.spec.name)' resumes from checkpoint \(found.path) (step \(found.step) of \(coordinator.totalSteps))")
        } else if let store = checkpoints?.store, let newest = try? store.list().last {
            // A fresh run would collide with these step directories (and hide them behind its own).
            throw ElasticError("checkpoint.directory \(store.root) already holds checkpoints (newest: step \(newest.step)); resume from them with --restore latest (or checkpoint.resume), or point checkpoint.directory somewhere else")
        }
        // Partial checkpoints a crash left behind can never be committed.
        checkpoints?.discardIncoming({ _ in true }, logger: logger)
    }

    func status() -> TrainingStatus {
        let ledger = coordinator.ledger
        let recent = ledger.suffix(20).map {
            TrainingStatus.Entry(step: UInt64($0.step), epoch: UInt64($0.epoch), nextSample: UInt64($0.nextSample), loss: $0.loss, replicasAgree: $0.replicasAgree)
        }
        return TrainingStatus(
            job: job.spec.name, phase: coordinator.phase.name, detail: coordinator.phase.detail,
            committedSteps: UInt64(ledger.count), totalSteps: UInt64(coordinator.totalSteps),
            lastLoss: ledger.last?.loss ?? .nan, samplesPerSecond: samplesPerSecond(),
            plan: coordinator.plan?.summary ?? "", recent: Array(recent),
            traffic: (coordinator.plan?.workers ?? []).compactMap { traffic[$0] },
            grid: coordinator.plan.map(TrainingStatus.Grid.init), batch: UInt32(clamping: job.spec.batch),
            checkpoints: checkpoints?.health(now: Date()))
    }

    /// Throughput over the last (up to) 20 committed steps this controller saw commit.
    func samplesPerSecond() -> Double {
        let window = coordinator.ledger.suffix(21).filter { $0.committedAt > .zero }
        guard let first = window.first, let last = window.last, window.count >= 2 else { return 0 }
        let seconds = Double(last.committedAt.since(first.committedAt).nanosecondsClamped) / 1e9
        return seconds > 0 ? Double((window.count - 1) * job.spec.batch) / seconds : 0
    }
}
