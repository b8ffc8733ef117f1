import CoreMetrics
import ElasticCore
import Prometheus

/// A worker's metrics, recorded where things happen (the trainer's steps, state copies and
/// checkpoint writes); every series carries the worker's `node` label. Thread-safe: checkpoint
/// parts are written on a thread of their own.
public final class WorkerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let steps, sent, received, uncompressed, checkpointRaw, checkpointStored, copyReceived, copyServed: CoreMetrics.Counter
    private let stepCompute, checkpointWrite, copyDuration: CoreMetrics.Timer
    private let generation, stage, appliedSteps: CoreMetrics.Gauge

    public init(registry: PrometheusCollectorRegistry, node: NodeID) {
        self.registry = registry
        let factory = MetricCatalog.factory(registry: registry)
        let labels = [("node", node.value)]
        typealias C = MetricCatalog
        steps = .init(C.workerSteps, labels, factory: factory)
        sent = .init(C.workerSent, labels, factory: factory)
        received = .init(C.workerReceived, labels, factory: factory)
        uncompressed = .init(C.workerUncompressed, labels, factory: factory)
        checkpointRaw = .init(C.workerCheckpointRaw, labels, factory: factory)
        checkpointStored = .init(C.workerCheckpointStored, labels, factory: factory)
        copyReceived = .init(C.workerCopyReceived, labels, factory: factory)
        copyServed = .init(C.workerCopyServed, labels, factory: factory)
        stepCompute = .init(C.workerStepCompute, labels, factory: factory)
        checkpointWrite = .init(C.workerCheckpointWrite, labels, factory: factory)
        copyDuration = .init(C.workerCopyDuration, labels, factory: factory)
        generation = .init(C.workerGeneration, labels, factory: factory)
        stage = .init(C.workerStage, labels, factory: factory)
        appliedSteps = .init(C.workerAppliedSteps, labels, factory: factory)
        stage.record(-1.0)
    }

    /// A computed step (reported to the controller): its compute time and exchange.
    func stepComputed(took: Duration, sent bytesSent: Int, received bytesReceived: Int, uncompressed bytesUncompressed: Int) {
        steps.increment()
        stepCompute.record(took)
        sent.add(UInt64(max(0, bytesSent)))
        received.add(UInt64(max(0, bytesReceived)))
        uncompressed.add(UInt64(max(0, bytesUncompressed)))
    }

    func assigned(generation value: Generation, stage index: Int?) {
        generation.record(Double(value.value))
        stage.record(Double(index ?? -1))
    }

    func applied(steps: UInt64) {
        appliedSteps.record(Double(steps))
    }

    func stateCopied(bytes: Int, took: Duration) {
        copyReceived.add(UInt64(max(0, bytes)))
        copyDuration.record(took)
    }

    func stateServed(bytes: Int) {
        copyServed.add(UInt64(max(0, bytes)))
    }

    func checkpointWritten(rawBytes: UInt64, storedBytes: UInt64, took: Duration) {
        checkpointRaw.add(rawBytes)
        checkpointStored.add(storedBytes)
        checkpointWrite.record(took)
    }

    /// The exposition text.
    public func scrape() -> String {
        MetricCatalog.exposition(registry)
    }
}
