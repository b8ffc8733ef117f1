import ElasticCore
import ElasticNumerics
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import X509

public struct WorkerConfiguration: Sendable {
    public var controller: Endpoint
    public var identity: Identity
    public var ca: Certificate
    public var capacity: Capacity
    public var softwareVersion: String
    /// Where the data plane listens (port 0: any free port) and, optionally, the host peers
    /// should dial (default: this side's address on the connection to the controller).
    public var dataListen = Endpoint(host: "0.0.0.0", port: 0)
    public var dataAdvertiseHost: String?
    /// Threads for matrix products (OpenBLAS). One per worker by default: several workers often
    /// share a host, and OpenBLAS threads spin while they wait.
    public var computeThreads = 1
    /// First and longest wait between reconnection attempts.
    public var initialBackoff: Duration = .milliseconds(100)
    public var maximumBackoff: Duration = .seconds(2)
    /// Where `/metrics` is served (docs/observability.md): any free loopback port by default,
    /// since several workers often share a host; the bound address goes to `httpAddressFile`.
    public var http = HTTPListenSettings(endpoint: Endpoint(host: "127.0.0.1", port: 0), required: false)
    public var httpAddressFile: URL?

    public init(controller: Endpoint, identity: Identity, ca: Certificate, capacity: Capacity, softwareVersion: String) {
        self.controller = controller
        self.identity = identity
        self.ca = ca
        self.capacity = capacity
        self.softwareVersion = softwareVersion
    }
}

/// A worker's control-plane session: joins over mutual TLS, heartbeats, follows the generation,
/// reconnects with backoff (resuming its incarnation when the controller still counts it), and
/// joins again as a new member when it learns it was fenced. A graceful shutdown leaves the
/// cluster before returning.
public final class WorkerService: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let session = SessionBox()

    public init(configuration: WorkerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let tls = try TLSContexts.mutualClient(identity: configuration.identity, ca: configuration.ca)
        let node = NodeID(PKI.commonName(of: configuration.identity.certificate) ?? "")
        BLAS.threads = configuration.computeThreads
        let metrics = WorkerMetrics(registry: configuration.http.registry ?? PrometheusCollectorRegistry(), node: node)
        let http = try await configuration.http.start(addressFile: configuration.httpAddressFile, logger: logger) { "metrics at http://\($0)/metrics" }
        if let http {
            Task { [logger] in await http.run(logger: logger, route: ObservabilityRoutes.worker(metrics: metrics)) }
        }
        defer {
            http?.close()
            if http != nil, let file = configuration.httpAddressFile { try? FileManager.default.removeItem(at: file) }
        }
        let dataPlane = DataPlane(identity: configuration.identity, ca: configuration.ca, node: node, logger: logger)
        let dataEndpoint: Endpoint
        do {
            dataEndpoint = try await dataPlane.start(host: configuration.dataListen.host, port: configuration.dataListen.port)
        } catch {
            throw ElasticError("cannot listen for peers on \(configuration.dataListen): \(error)")
        }
        logger.info("data plane listening on \(dataEndpoint)")
        let trainer = Trainer(dataPlane: dataPlane, node: node, logger: logger, metrics: metrics) { [session] message, generation in
            session.send(message, generation: generation)
        }
        await trainer.serveState()
        defer { Task { await trainer.stop(); await dataPlane.stop() } }
        var backoff = configuration.initialBackoff
        let expiry = configuration.identity.certificate.notValidAfter
        var expired = false
        var revoked: String?
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !session.isLeaving {
                // An expired certificate cannot connect again: stop and say what to do.
                if expiry <= Date() {
                    expired = true
                    return
                }
                let outcome: WorkerSessionOutcome
                do {
                    let connection = try await FrameChannels.connect(host: configuration.controller.host, port: configuration.controller.port, tls: tls, expecting: .controller)
                    let host = configuration.dataAdvertiseHost ?? (dataEndpoint.host == "0.0.0.0" || dataEndpoint.host == "::" ? connection.localIP ?? "127.0.0.1" : dataEndpoint.host)
                    outcome = await runSession(connection, trainer: trainer, dataPlane: dataPlane, dataAddress: Endpoint(host: host, port: dataEndpoint.port).description)
                } catch {
                    outcome = .lost(ElasticError.talking(to: configuration.controller, error).message)
                }
                switch outcome {
                case .left:
                    return
                case .fenced(let reason):
                    logger.warning("fenced by the controller: \(reason)")
                    session.incarnation = nil
                    backoff = configuration.initialBackoff
                case .welcomed(let reason):
                    logger.warning("lost the controller: \(reason); reconnecting")
                    backoff = configuration.initialBackoff
                    try? await Task.sleep(for: backoff)
                case .lost(let reason):
                    if session.isLeaving { return }
                    logger.warning("cannot reach the controller: \(reason); retrying in \(backoff.shortDescription)")
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, configuration.maximumBackoff)
                case .revoked(let reason):
                    revoked = reason
                    return
                case .refused(let reason):
                    logger.error("the controller refused this worker: \(reason); retrying in \(configuration.maximumBackoff.shortDescription)")
                    try? await Task.sleep(for: configuration.maximumBackoff)
                }
            }
        } onGracefulShutdown: { [session, logger] in
            logger.info("shutting down: leaving the cluster (handing off state first if needed)")
            Task {
                // A checkpoint part being written is finished first (the last step's, say).
                await trainer.finishCheckpointWrite(within: .seconds(20))
                session.leave(handOffDeadline: .seconds(40))
            }
        }
        if let revoked {
            throw ElasticError("the controller refused this worker for good: \(revoked)")
        }
        if expired {
            throw ElasticError("this worker's node certificate expired at \(expiry); join again with --token and --ca-hash (same --data-dir)")
        }
        logger.info("worker stopped")
    }

    private func runSession(_ connection: FrameConnection, trainer: Trainer, dataPlane: DataPlane, dataAddress: String) async -> WorkerSessionOutcome {
        let (outbox, continuation) = AsyncStream<Outbound>.makeStream()
        let tracker = SessionTracker()
        session.attach(continuation)
        defer { session.detach() }
        continuation.yield(.frame(ControlMessage.hello(Hello(
            resuming: session.incarnation, capacity: configuration.capacity, softwareVersion: configuration.softwareVersion,
            dataAddress: dataAddress
        )).frame(generation: session.generation)))

        let heartbeats = Task { [session] in
            while !Task.isCancelled {
                guard let interval = tracker.heartbeatInterval, let incarnation = session.incarnation, !session.isLeaving else {
                    try? await Task.sleep(for: .milliseconds(20))
                    continue
                }
                continuation.yield(.frame(ControlMessage.heartbeat(incarnation: incarnation).frame(generation: session.generation)))
                try? await Task.sleep(for: interval)
            }
        }
        defer { heartbeats.cancel() }

        let error = await ConnectionPump.run(connection, outbox: outbox) { [session, logger] frame in
            let message: ControlMessage
            do {
                message = try ControlMessage(frame: frame)
            } catch {
                tracker.finish(.lost("malformed message from the controller: \(error)"))
                return false
            }
            switch message {
            case .welcome(let welcome):
                let resumed = session.incarnation == welcome.incarnation
                session.incarnation = welcome.incarnation
                session.generation = frame.generation
                tracker.heartbeatInterval = welcome.heartbeatInterval
                tracker.welcomed = true
                logger.info("\(resumed ? "resumed" : "joined") as member \(welcome.node) incarnation \(welcome.incarnation) at generation \(frame.generation); heartbeat every \(welcome.heartbeatInterval.shortDescription)")
            case .heartbeatAck:
                session.generation = max(session.generation, frame.generation)
            case .view(let view):
                session.generation = max(session.generation, frame.generation)
                await dataPlane.allow(members: Set(view.members.map(\.node)))
                logger.info("generation \(frame.generation): \(view.members.count) member(s): \(view.members.map(\.node.value).joined(separator: ", "))")
            case .refused(let refused):
                switch refused.code {
                case .fenced: tracker.finish(.fenced(refused.message))
                case .shuttingDown: tracker.finish(.lost(refused.message))
                case .certificateRevoked: tracker.finish(.revoked(refused.message))
                default: tracker.finish(.refused(refused.message))
                }
                return false
            case .done(let text):
                logger.info("\(text)")
                tracker.finish(.left)
                return false
            default:
                if await !trainer.handle(message, generation: frame.generation) {
                    logger.warning("unexpected \(message.kind) from the controller; ignored")
                }
            }
            return true
        }
        if let outcome = tracker.outcome { return outcome }
        let reason = error.map { ElasticError.talking(to: configuration.controller, $0).message } ?? "the controller closed the connection"
        if session.isLeaving && tracker.welcomed { return .left }
        return tracker.welcomed ? .welcomed(reason) : .lost(reason)
    }
}

/// The worker's membership, shared between its session tasks.
private final class SessionBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _incarnation: Generation?
    private var _generation: Generation = .zero
    private var _leaving = false
    private var outbox: AsyncStream<Outbound>.Continuation?

    var incarnation: Generation? {
        get { lock.withLock { _incarnation } }
        set { lock.withLock { _incarnation = newValue } }
    }

    var generation: Generation {
        get { lock.withLock { _generation } }
        set { lock.withLock { _generation = newValue } }
    }

    var isLeaving: Bool { lock.withLock { _leaving } }

    func attach(_ continuation: AsyncStream<Outbound>.Continuation) { lock.withLock { outbox = continuation } }
    func detach() { lock.withLock { outbox = nil } }

    /// Queues a message on the open session; without one it is dropped (the controller will
    /// re-plan when this worker comes back).
    func send(_ message: ControlMessage, generation: Generation) {
        let continuation = lock.withLock { outbox }
        continuation?.yield(.frame(message.frame(generation: generation)))
    }

    /// Sends a leave on the open session, if any; without one there is nothing to leave. The
    /// controller answers with `done` once nobody needs to copy this worker's state any more
    /// (at once, unless it is the last holder of some layers); until then the data plane keeps
    /// serving it.
    func leave(handOffDeadline: Duration) {
        let (continuation, incarnation, generation): (AsyncStream<Outbound>.Continuation?, Generation?, Generation) = lock.withLock {
            _leaving = true
            return (outbox, _incarnation, _generation)
        }
        if let continuation, let incarnation {
            continuation.yield(.frame(ControlMessage.leave(incarnation: incarnation).frame(generation: generation)))
            // Don't wait forever for the controller.
            Task {
                try? await Task.sleep(for: handOffDeadline)
                continuation.yield(.close(grace: .zero))
            }
        } else {
            continuation?.yield(.close(grace: .zero))
        }
    }
}

private enum WorkerSessionOutcome: Sendable {
    /// Connected and welcomed, then lost the connection.
    case welcomed(String)
    /// Never welcomed: the connection failed or dropped first.
    case lost(String)
    case fenced(String)
    case refused(String)
    /// This node's certificate was revoked: no retry can succeed.
    case revoked(String)
    case left
}

/// What one session learned, written by its reader and read when it ends.
private final class SessionTracker: @unchecked Sendable {
    private let lock = NSLock()
    private var _interval: Duration?
    private var _welcomed = false
    private var _outcome: WorkerSessionOutcome?

    var heartbeatInterval: Duration? {
        get { lock.withLock { _interval } }
        set { lock.withLock { _interval = newValue } }
    }

    var welcomed: Bool {
        get { lock.withLock { _welcomed } }
        set { lock.withLock { _welcomed = newValue } }
    }

    var outcome: WorkerSessionOutcome? { lock.withLock { _outcome } }

    /// Records how the session ends; the first word wins.
    func finish(_ outcome: WorkerSessionOutcome) {
        lock.withLock { if _outcome == nil { _outcome = outcome } }
    }
}
