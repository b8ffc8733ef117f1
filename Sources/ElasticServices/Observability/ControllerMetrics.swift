import CoreMetrics
import ElasticCore
import Foundation
import Prometheus

/// The controller's metrics, brought up to date from a `ControllerObservation` at each scrape:
/// gauges take the snapshot's values, counters and histograms take what happened since the
/// previous snapshot (commits, recoveries and checkpoints are told apart by when they happened,
/// so a rollback or a new job never makes a counter go back).
public final class ControllerMetrics: @unchecked Sendable {
    public let registry: PrometheusCollectorRegistry
    private let lock = NSLock()

    private let members: [String: CoreMetrics.Gauge]
    private let phases: [String: CoreMetrics.Gauge]
    private let generation, uptime, committedSteps, totalSteps, samplesPerSecond, loss, recovering, compressionRatio: CoreMetrics.Gauge
    private let checkpointRaw, checkpointStored, checkpointsFailing, checkpointAge: CoreMetrics.Gauge
    private let commits, samples, recoveries, sent, received, uncompressed, checkpoints, checkpointRawTotal, checkpointStoredTotal: CoreMetrics.Counter
    private let pauses, checkpointFailures: CoreMetrics.Counter
    private let pausedSeconds: CoreMetrics.FloatingPointCounter
    private let stepDuration, recoveryDuration, checkpointDuration: CoreMetrics.Timer

    /// What earlier snapshots already counted.
    private var lastCommitAt = -Double.infinity
    private var countedRecoveries: Set<Double> = []
    private var countedCheckpoints: Set<String> = []
    private var countedPauses = 0
    private var countedPausedSeconds = 0.0
    private var countedCheckpointFailures = (job: -Double.infinity, failures: 0)
    private var trafficJob: Double?
    private var trafficCounted = ControllerObservation.Traffic(node: "", bytesSent: 0, bytesReceived: 0, uncompressedBytes: 0)

    static let phaseNames = ["idle", "waiting", "assigning", "running", "finished", "stopped"]

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        let factory = MetricCatalog.factory(registry: registry)
        typealias C = MetricCatalog
        members = Dictionary(uniqueKeysWithValues: Membership.State.allCases.map { ($0.rawValue, CoreMetrics.Gauge(C.members, [("state", $0.rawValue)], factory: factory)) })
        phases = Dictionary(uniqueKeysWithValues: Self.phaseNames.map { ($0, CoreMetrics.Gauge(C.phase, [("phase", $0)], factory: factory)) })
        generation = .init(C.generation, factory: factory)
        uptime = .init(C.uptime, factory: factory)
        committedSteps = .init(C.committedSteps, factory: factory)
        totalSteps = .init(C.totalSteps, factory: factory)
        samplesPerSecond = .init(C.samplesPerSecond, factory: factory)
        loss = .init(C.loss, factory: factory)
        recovering = .init(C.recovering, factory: factory)
        compressionRatio = .init(C.compressionRatio, factory: factory)
        checkpointRaw = .init(C.checkpointRaw, factory: factory)
        checkpointStored = .init(C.checkpointStored, factory: factory)
        checkpointsFailing = .init(C.checkpointsFailing, factory: factory)
        checkpointAge = .init(C.checkpointAge, factory: factory)
        pauses = .init(C.pauses, factory: factory)
        pausedSeconds = .init(C.pausedSeconds, factory: factory)
        checkpointFailures = .init(C.checkpointFailures, factory: factory)
        commits = .init(C.commits, factory: factory)
        samples = .init(C.samples, factory: factory)
        recoveries = .init(C.recoveries, factory: factory)
        sent = .init(C.exchangeSent, factory: factory)
        received = .init(C.exchangeReceived, factory: factory)
        uncompressed = .init(C.exchangeUncompressed, factory: factory)
        checkpoints = .init(C.checkpoints, factory: factory)
        checkpointRawTotal = .init(C.checkpointRawTotal, factory: factory)
        checkpointStoredTotal = .init(C.checkpointStoredTotal, factory: factory)
        stepDuration = .init(C.stepDuration, factory: factory)
        recoveryDuration = .init(C.recoveryDuration, factory: factory)
        checkpointDuration = .init(C.checkpointDuration, factory: factory)
        compressionRatio.record(1.0)
        phases["idle"]?.record(1.0)
    }

    /// Brings every metric up to `observation` and returns the exposition text.
    public func scrape(_ observation: ControllerObservation) -> String {
        lock.withLock {
            update(observation)
            return MetricCatalog.exposition(registry)
        }
    }

    private func update(_ observation: ControllerObservation) {
        for (state, count) in observation.membersByState { members[state]?.record(Double(count)) }
        generation.record(Double(observation.generation))
        uptime.record(observation.uptime)
        pauses.increment(by: max(0, observation.pauses - countedPauses))
        countedPauses = max(countedPauses, observation.pauses)
        if observation.pausedSeconds > countedPausedSeconds {
            pausedSeconds.increment(by: observation.pausedSeconds - countedPausedSeconds)
            countedPausedSeconds = observation.pausedSeconds
        }
        let phase = observation.training?.phase ?? "idle"
        for (name, gauge) in phases { gauge.record(name == phase ? 1.0 : 0.0) }
        guard let training = observation.training else { return }

        committedSteps.record(Double(training.nextStep))
        totalSteps.record(Double(training.totalSteps))
        samplesPerSecond.record(training.samplesPerSecond)
        if let value = training.loss, value.isFinite { loss.record(value) }
        recovering.record(training.recovering == nil ? 0.0 : 1.0)

        // Commits since the last scrape, and the time from each one's predecessor.
        var previous: ControllerObservation.Point?
        for point in training.curve {
            defer { previous = point }
            guard point.at > lastCommitAt else { continue }
            commits.increment()
            samples.increment(by: training.batch)
            if let previous, previous.step + 1 == point.step, point.at >= previous.at {
                stepDuration.record(.nanoseconds(Int64((point.at - previous.at) * 1e9)))
            }
        }
        if let last = training.curve.last { lastCommitAt = max(lastCommitAt, last.at) }

        for recovery in training.recoveries where countedRecoveries.insert(recovery.startedAt).inserted {
            recoveries.increment()
            recoveryDuration.record(.nanoseconds(Int64(recovery.seconds * 1e9)))
        }

        // The job's totals only grow; a new job starts them again.
        if trafficJob != training.startedAt {
            trafficJob = training.startedAt
            trafficCounted = .init(node: "", bytesSent: 0, bytesReceived: 0, uncompressedBytes: 0)
        }
        let total = training.trafficTotal
        sent.add(total.bytesSent &- min(total.bytesSent, trafficCounted.bytesSent))
        received.add(total.bytesReceived &- min(total.bytesReceived, trafficCounted.bytesReceived))
        uncompressed.add(total.uncompressedBytes &- min(total.uncompressedBytes, trafficCounted.uncompressedBytes))
        trafficCounted = total
        let lastSent = training.traffic.reduce(0) { $0 + $1.bytesSent }
        let lastUncompressed = training.traffic.reduce(0) { $0 + $1.uncompressedBytes }
        compressionRatio.record(lastSent > 0 ? Double(lastUncompressed) / Double(lastSent) : 1.0)

        for checkpoint in training.checkpoints where countedCheckpoints.insert("\(training.startedAt)/\(checkpoint.step)/\(checkpoint.committedAt ?? 0)").inserted {
            checkpoints.increment()
            checkpointRawTotal.increment(by: checkpoint.rawBytes)
            checkpointStoredTotal.increment(by: checkpoint.storedBytes)
            if let seconds = checkpoint.seconds { checkpointDuration.record(.nanoseconds(Int64(seconds * 1e9))) }
        }
        if let last = training.checkpoints.last {
            checkpointRaw.record(Double(last.rawBytes))
            checkpointStored.record(Double(last.storedBytes))
        }
        if let health = training.checkpointHealth {
            // The job's failures only grow; a new job counts from 0 again.
            if countedCheckpointFailures.job != training.startedAt { countedCheckpointFailures = (training.startedAt, 0) }
            checkpointFailures.increment(by: max(0, health.failures - countedCheckpointFailures.failures))
            countedCheckpointFailures.failures = max(countedCheckpointFailures.failures, health.failures)
            checkpointsFailing.record(Double(health.consecutiveFailures))
            if let age = health.newestAgeSeconds { checkpointAge.record(age) }
        }
    }
}
