import CoreMetrics
import ElasticCore
import Prometheus

/// Every metric `elastic` exports: its Prometheus name, what it means (the `# HELP` line; the
/// same text is in docs/observability.md), and the buckets of its histogram.
///
/// Metrics are made with the swift-metrics API (`Gauge`, `Counter`, `Timer`) on a
/// `PrometheusMetricsFactory` over a registry that the caller owns: the CLI bootstraps the
/// global `MetricsSystem` with that same registry, and services in one test process each get
/// their own, so nothing is global to them.
public enum MetricCatalog {
    public struct Entry: Sendable {
        public let name: String
        public let help: String
        /// Histogram buckets (for timers), in seconds.
        public let buckets: [Duration]?

        init(_ name: String, _ help: String, buckets: [Duration]? = nil) {
            self.name = name
            self.help = help
            self.buckets = buckets
        }
    }

    static let stepBuckets: [Duration] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60].map { .milliseconds(Int64($0 * 1000)) }
    static let recoveryBuckets: [Duration] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300].map { .milliseconds(Int64($0 * 1000)) }

    // MARK: Controller

    public static let members = Entry("elastic_members", "Members the controller knows of, by state (alive, suspect; dead and left for departed nodes).")
    public static let generation = Entry("elastic_generation", "The membership generation: it grows on every membership change.")
    public static let uptime = Entry("elastic_controller_uptime_seconds", "Seconds since the controller started.")
    public static let pauses = Entry("elastic_controller_pauses_total", "Times the controller found it had not run for a while (SIGSTOP, a VM stall, a debugger): its members' deadlines restarted instead of declaring them dead.")
    public static let pausedSeconds = Entry("elastic_controller_paused_seconds_total", "Total length of the controller's pauses, in seconds.")
    public static let phase = Entry("elastic_training_phase", "1 for the training phase the job is in (idle, waiting, assigning, running, finished, stopped), 0 for the others.")
    public static let committedSteps = Entry("elastic_training_committed_steps", "Steps applied so far: one past the last committed step (a resumed job counts the checkpoint's steps).")
    public static let totalSteps = Entry("elastic_training_total_steps", "Steps in the job.")
    public static let commits = Entry("elastic_training_commits_total", "Steps committed, redone steps included.")
    public static let samples = Entry("elastic_training_samples_total", "Samples in committed steps (global batch per commit).")
    public static let samplesPerSecond = Entry("elastic_training_samples_per_second", "Throughput over the last (up to) 20 committed steps.")
    public static let loss = Entry("elastic_training_loss", "Mean loss of the last committed step's global batch.")
    public static let stepDuration = Entry("elastic_training_step_duration_seconds", "Time from one committed step to the next (a recovery in between is included).", buckets: stepBuckets)
    public static let recoveries = Entry("elastic_recoveries_total", "Recoveries: a membership change interrupted running training, which resumed at a later committed step.")
    public static let recoveryDuration = Entry("elastic_recovery_duration_seconds", "Time from the interruption of a recovery to the next committed step.", buckets: recoveryBuckets)
    public static let recovering = Entry("elastic_recovering", "1 while a recovery lasts.")
    public static let exchangeSent = Entry("elastic_exchange_sent_bytes_total", "Gradient-exchange bytes sent by every slot, over every reported step.")
    public static let exchangeReceived = Entry("elastic_exchange_received_bytes_total", "Gradient-exchange bytes received by every slot, over every reported step.")
    public static let exchangeUncompressed = Entry("elastic_exchange_uncompressed_bytes_total", "What an uncompressed float32 exchange would have sent, over every reported step.")
    public static let compressionRatio = Entry("elastic_exchange_compression_ratio", "Uncompressed over sent bytes of the current plan's last reported steps (1 when nothing is exchanged).")
    public static let checkpoints = Entry("elastic_checkpoints_total", "Checkpoints committed by this controller.")
    public static let checkpointDuration = Entry("elastic_checkpoint_duration_seconds", "Time from a checkpoint's request to its commit.", buckets: recoveryBuckets)
    public static let checkpointRaw = Entry("elastic_checkpoint_raw_bytes", "Tensor bytes of the last committed checkpoint.")
    public static let checkpointStored = Entry("elastic_checkpoint_stored_bytes", "Bytes on disk of the last committed checkpoint (zstd).")
    public static let checkpointRawTotal = Entry("elastic_checkpoint_raw_bytes_total", "Tensor bytes of every checkpoint committed.")
    public static let checkpointStoredTotal = Entry("elastic_checkpoint_stored_bytes_total", "Bytes on disk of every checkpoint committed.")
    public static let checkpointFailures = Entry("elastic_checkpoint_failures_total", "Checkpoints that were not made: a writer failed (a full disk, say), left before writing, or the commit failed.")
    public static let checkpointsFailing = Entry("elastic_checkpoint_consecutive_failures", "Checkpoints that failed since the last one that was committed (0 while checkpoints work).")
    public static let checkpointAge = Entry("elastic_checkpoint_newest_age_seconds", "Seconds since the newest valid checkpoint was written (absent until there is one).")

    // MARK: Worker

    public static let workerSteps = Entry("elastic_worker_steps_total", "Steps this worker computed (forward, backward and exchange).")
    public static let workerStepCompute = Entry("elastic_worker_step_compute_seconds", "Time to compute this worker's part of a step, all-reduce included.", buckets: stepBuckets)
    public static let workerSent = Entry("elastic_worker_exchange_sent_bytes_total", "Gradient-exchange bytes this worker sent.")
    public static let workerReceived = Entry("elastic_worker_exchange_received_bytes_total", "Gradient-exchange bytes this worker received.")
    public static let workerUncompressed = Entry("elastic_worker_exchange_uncompressed_bytes_total", "What this worker's exchange would have sent uncompressed.")
    public static let workerCheckpointWrite = Entry("elastic_worker_checkpoint_write_seconds", "Time to write this worker's part of a checkpoint (in the background).", buckets: recoveryBuckets)
    public static let workerCheckpointRaw = Entry("elastic_worker_checkpoint_raw_bytes_total", "Tensor bytes of the checkpoint parts this worker wrote.")
    public static let workerCheckpointStored = Entry("elastic_worker_checkpoint_stored_bytes_total", "Bytes on disk of the checkpoint parts this worker wrote.")
    public static let workerCopyReceived = Entry("elastic_worker_state_copy_received_bytes_total", "Layer state this worker copied from peers on a re-plan.")
    public static let workerCopyServed = Entry("elastic_worker_state_copy_served_bytes_total", "Layer state this worker sent to peers that copied it.")
    public static let workerCopyDuration = Entry("elastic_worker_state_copy_seconds", "Time to copy a stage's state from a peer.", buckets: recoveryBuckets)
    public static let workerGeneration = Entry("elastic_worker_generation", "The generation of the plan this worker follows.")
    public static let workerStage = Entry("elastic_worker_stage", "The stage this worker holds in the current plan (-1: none, a spare).")
    public static let workerAppliedSteps = Entry("elastic_worker_applied_steps", "Steps applied to this worker's layers.")

    public static let all: [Entry] = [
        members, generation, uptime, pauses, pausedSeconds, phase, committedSteps, totalSteps, commits, samples, samplesPerSecond, loss, stepDuration,
        recoveries, recoveryDuration, recovering, exchangeSent, exchangeReceived, exchangeUncompressed, compressionRatio,
        checkpoints, checkpointDuration, checkpointRaw, checkpointStored, checkpointRawTotal, checkpointStoredTotal,
        checkpointFailures, checkpointsFailing, checkpointAge,
        workerSteps, workerStepCompute, workerSent, workerReceived, workerUncompressed, workerCheckpointWrite,
        workerCheckpointRaw, workerCheckpointStored, workerCopyReceived, workerCopyServed, workerCopyDuration,
        workerGeneration, workerStage, workerAppliedSteps,
    ]

    /// A swift-metrics factory over `registry` with this catalog's histogram buckets.
    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        for entry in all {
            if let buckets = entry.buckets { factory.durationHistogramBuckets[entry.name] = buckets }
        }
        return factory
    }

    /// The registry in Prometheus text format (version 0.0.4), families sorted by name, each with
    /// its `# HELP` line from this catalog.
    public static func exposition(_ registry: PrometheusCollectorRegistry) -> String {
        let help = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0.help) })
        var families: [(name: String, lines: [Substring])] = []
        for line in registry.emitToString().split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                families.append((name, [line]))
            } else if line.hasPrefix("# HELP ") {
                continue
            } else if !families.isEmpty {
                families[families.count - 1].lines.append(line)
            }
        }
        var text = ""
        for family in families.sorted(by: { $0.name < $1.name }) {
            if let help = help[family.name] {
                text += "# HELP \(family.name) \(help.replacingOccurrences(of: "\\", with: "\\\\"))\n"
            }
            for line in family.lines { text += line + "\n" }
        }
        return text
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

extension CoreMetrics.Gauge {
    convenience init(_ entry: MetricCatalog.Entry, _ dimensions: [(String, String)] = [], factory: any MetricsFactory) {
        self.init(label: entry.name, dimensions: dimensions, factory: factory)
    }
}

extension CoreMetrics.Counter {
    convenience init(_ entry: MetricCatalog.Entry, _ dimensions: [(String, String)] = [], factory: any MetricsFactory) {
        self.init(label: entry.name, dimensions: dimensions, factory: factory)
    }

    /// Adds `amount` (a byte count, say), saturating at `Int64.max`.
    func add(_ amount: UInt64) {
        if amount > 0 { increment(by: Int64(clamping: amount)) }
    }
}

extension CoreMetrics.FloatingPointCounter {
    convenience init(_ entry: MetricCatalog.Entry, _ dimensions: [(String, String)] = [], factory: any MetricsFactory) {
        self.init(label: entry.name, dimensions: dimensions, factory: factory)
    }
}

extension CoreMetrics.Timer {
    convenience init(_ entry: MetricCatalog.Entry, _ dimensions: [(String, String)] = [], factory: any MetricsFactory) {
        self.init(label: entry.name, dimensions: dimensions, factory: factory)
    }

    func record(_ duration: Duration) {
        recordNanoseconds(max(0, duration.nanosecondsClamped))
    }
}
