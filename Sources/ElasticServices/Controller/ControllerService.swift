import ElasticCore
import ElasticStorage
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// Everything `elastic controller` needs; every field but the listen address and the data dir
/// has a default.
public struct ControllerConfiguration: Sendable {
    public var listen: Endpoint
    public var dataDirectory: URL
    public var membership = Membership.Settings()
    /// How long a node certificate issued at bootstrap stays valid.
    public var nodeCertificateLifetime: TimeInterval = 7 * 86400
    public var channel = ChannelSettings()
    /// A job file (JSON) to run as soon as enough workers have joined.
    public var jobFile: URL?
    /// `latest` or a checkpoint directory the job starts from (overrides `checkpoint.resume`).
    public var restore: String?
    /// The dashboard and `/metrics` (docs/observability.md).
    public var http = HTTPListenSettings(endpoint: Endpoint(host: "127.0.0.1", port: 9400), required: false)
    /// Connections open at once at most; beyond it a new one is closed at once.
    public var maximumConnections = 1024
    /// Connections without a client certificate (or still in their handshake) at most: they
    /// may only fetch the CA or bootstrap, so a few suffice; a flood of them is closed at once.
    public var maximumUnauthenticatedConnections = 64

    public init(listen: Endpoint, dataDirectory: URL) {
        self.listen = listen
        self.dataDirectory = dataDirectory
    }
}

/// The controller daemon: accepts mutual-TLS connections, runs the failure detector and answers
/// members, joining workers and administrators. Runs under a `ServiceGroup`; a graceful shutdown
/// (SIGTERM) stops accepting, tells every connection and returns.
public struct ControllerService: Service {
    public let configuration: ControllerConfiguration
    private let logger: Logger
    /// Called with the bound address once the listener is up (port 0 picks a free port).
    private let onListening: @Sendable (Endpoint) -> Void

    public init(configuration: ControllerConfiguration, logger: Logger, onListening: @escaping @Sendable (Endpoint) -> Void = { _ in }) {
        self.configuration = configuration
        self.logger = logger
        self.onListening = onListening
    }

    /// The file in which a running controller records its address, for admin commands.
    public static func addressFile(dataDirectory: URL) -> URL {
        dataDirectory.appendingPathComponent("controller.address")
    }

    public func run() async throws {
        let paths = ControllerPaths(dataDirectory: configuration.dataDirectory)
        let authority = try paths.loadAuthority()
        // One controller per data dir: a second one would append to the same journal.
        let dataLock = try DataDirectoryLock.acquire(configuration.dataDirectory, holder: "controller")
        defer { dataLock.release() }
        let identity = try paths.loadControllerIdentity()
        let tls = try TLSContexts.controller(identity: identity, ca: authority.certificate)
        var job: AcceptedJob?
        if let jobFile = configuration.jobFile {
            guard let bytes = FileManager.default.contents(atPath: jobFile.path) else {
                throw ElasticError("cannot read the job file \(jobFile.path)")
            }
            job = try AcceptedJob.load(json: Array(bytes), baseDirectory: jobFile.deletingLastPathComponent())
        }
        let events = try EventLog(file: paths.events, logger: logger)
        defer { events.close() }
        let ledger = LedgerFile(file: paths.ledger)
        defer { ledger.close() }

        // The durable state: what the journal holds, or nothing on a first start.
        let store: JournalStore
        let loaded: DurableStateLoad
        do {
            store = try JournalStore(directory: paths.journal.path)
            loaded = try store.load()
        } catch {
            throw ElasticError("cannot read the controller's journal in \(paths.journal.path): \(error)")
        }
        if let dropped = loaded.dropped { logger.warning("journal: \(dropped) (a write the crash interrupted; nothing acted on it)") }
        let (failures, failed) = AsyncStream<String>.makeStream()
        let journal = ControllerJournal(store: store, state: loaded.state, logger: logger) { failed.yield($0) }
        let recovering = loaded.state.generation > 0
        if recovering {
            logger.info("recovering from the journal (\(loaded.fromSnapshot ? "a snapshot and " : "")\(loaded.replayed) record(s)): generation \(loaded.state.generation), \(loaded.state.members.count) member(s)\(loaded.state.job.map { _ in ", a job at step \(loaded.state.nextStep)" } ?? "")")
        }
        var tokenRegistry = TokenStore.registry(loaded.state.tokens)
        if loaded.state.tokens.isEmpty, FileManager.default.fileExists(atPath: paths.tokens.path) {
            // A data dir from before the journal: its tokens move in once.
            tokenRegistry = try TokenStore(file: paths.tokens).registry
            guard journal.record(.tokens(TokenStore.durable(tokenRegistry))) else { throw ElasticError("cannot write the journal in \(paths.journal.path)") }
            try? FileManager.default.moveItem(at: paths.tokens, to: paths.tokens.appendingPathExtension("imported"))
        }
        let tokens = TokenStore(registry: tokenRegistry) { registry in
            guard journal.record(.tokens(TokenStore.durable(registry))) else { throw ElasticError("the journal cannot be written") }
        }

        let training = try ControllerTraining.starting(job: job, restore: configuration.restore, durable: loaded.state, logger: logger)
        if let training, training.journaled == false {
            journal.record(.job(training.durableJob))
        }
        if let training, training.journaled {
            let written = ledger.catchUp(with: loaded.state.ledger, job: training.job.spec.name)
            if written > 0 { logger.info("ledger.jsonl: wrote \(written) committed step(s) the journal had and the file did not (the crash came between them)") }
        }
        let membership = recovering
            ? Membership(settings: configuration.membership, recovering: loaded.state, now: MonotonicClock.now())
            : Membership(settings: configuration.membership)
        if recovering {
            journal.record(.generation(membership.generation.value))
            events.record(.opened(reason: "controller restarted; waiting up to \(configuration.membership.recoveryGrace.shortDescription) for \(membership.awaitingRecovery.count) member(s) to resume", generation: membership.generation))
        }
        let state = ControllerState(
            membership: membership, tokens: tokens, authority: authority, events: events, ledger: ledger, journal: journal,
            training: training, baseDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
            nodeCertificateLifetime: configuration.nodeCertificateLifetime, logger: logger)

        var channelSettings = configuration.channel
        // Members heartbeat; a connection silent for several dead timeouts is gone for good.
        channelSettings.readTimeout = max(.seconds(30), configuration.membership.deadTimeout * 4)
        // Control frames are small: a frame must arrive whole within 10 s, and one from a peer
        // without a certificate (a CA request, a bootstrap) is at most 64 KiB.
        channelSettings.frameDeadline = .seconds(10)
        channelSettings.anonymousMaximumFrameSize = 64 << 10
        let budget = ConnectionBudget(total: configuration.maximumConnections, unauthenticated: configuration.maximumUnauthenticatedConnections)
        let server: NIOAsyncChannel<FrameConnection, Never>
        do {
            server = try await FrameChannels.listen(host: configuration.listen.host, port: configuration.listen.port, tls: tls, settings: channelSettings)
        } catch {
            throw ElasticError("cannot listen on \(configuration.listen): \(error); is another controller running there, or is the address wrong?")
        }
        let port = server.channel.localAddress?.port ?? configuration.listen.port
        let bound = Endpoint(host: configuration.listen.host, port: port)
        try? PKIFiles.write("\(bound)\n", to: Self.addressFile(dataDirectory: configuration.dataDirectory), mode: 0o644)
        logger.info("listening on \(bound) (CA \(authority.hash))")
        onListening(bound)
        let httpAddressFile = HTTPListenSettings.addressFile(dataDirectory: configuration.dataDirectory)
        let http: StatusHTTPServer?
        do {
            http = try await configuration.http.start(addressFile: httpAddressFile, logger: logger) {
                "dashboard at http://\($0)/ · metrics at http://\($0)/metrics"
            }
        } catch {
            server.channel.close(promise: nil)
            try? FileManager.default.removeItem(at: Self.addressFile(dataDirectory: configuration.dataDirectory))
            throw error
        }
        let metrics = ControllerMetrics(registry: configuration.http.registry ?? PrometheusCollectorRegistry())

        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    // The journal cannot be written: stop rather than act on unrecorded changes.
                    for await reason in failures {
                        await state.shutdown()
                        server.channel.close(promise: nil)
                        throw ElasticError(reason)
                    }
                }
                group.addTask {
                    while !Task.isCancelled, await !state.isShuttingDown {
                        let wait = await state.tick()
                        try? await Task.sleep(for: wait)
                    }
                }
                if let http {
                    group.addTask { await http.run(logger: logger, route: ObservabilityRoutes.controller(state: state, metrics: metrics)) }
                }
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        guard budget.open() else {
                            budget.refused(logger: logger, remote: connection.remoteAddress)
                            group.addTask { await connection.close() }
                            continue
                        }
                        group.addTask {
                            let authenticated = await Self.serve(connection, state: state, budget: budget, logger: logger)
                            budget.closed(authenticated: authenticated)
                        }
                    }
                }
                failed.finish()
            }
        } onGracefulShutdown: {
            logger.info("shutting down: closing the listener and every connection")
            server.channel.close(promise: nil)
            http?.close()
            Task { await state.shutdown() }
        }
        try? FileManager.default.removeItem(at: Self.addressFile(dataDirectory: configuration.dataDirectory))
        if http != nil { try? FileManager.default.removeItem(at: httpAddressFile) }
        logger.info("controller stopped")
    }

    /// Serves one connection to its end; returns whether its peer was authenticated.
    private static func serve(_ connection: FrameConnection, state: ControllerState, budget: ConnectionBudget, logger: Logger) async -> Bool {
        let peer: PeerIdentity
        do {
            peer = try await connection.peer.get()
        } catch {
            logger.notice("TLS handshake with \(connection.remoteAddress) failed: \(error)")
            await connection.close()
            return false
        }
        if peer.role != nil { budget.authenticated() }
        // Bounded: a peer that stops reading is closed (ControllerState.send), not queued for.
        let (outbox, continuation) = AsyncStream<Outbound>.makeStream(bufferingPolicy: .bufferingOldest(ControllerState.outboxCapacity))
        let id = await state.register(peer: peer, remoteAddress: connection.remoteAddress, outbox: continuation)
        let error = await ConnectionPump.run(connection, outbox: outbox) { frame in
            await state.receive(id, frame: frame)
            return true
        }
        if let error {
            logger.debug("connection \(connection.remoteAddress) (\(peer.name ?? "anonymous")) ended: \(error)")
        }
        await state.disconnected(id)
        return peer.role != nil
    }
}

/// Open connections, and those not (yet) authenticated by a client certificate: the caps that
/// keep a flood of connections from exhausting the controller's memory and file descriptors.
final class ConnectionBudget: @unchecked Sendable {
    private let lock = NSLock()
    private let maximumTotal: Int
    private let maximumUnauthenticated: Int
    private var total = 0
    private var unauthenticated = 0
    private var refusedSinceReport = 0
    private var lastReport = ContinuousClock.now - .seconds(60)

    init(total: Int, unauthenticated: Int) {
        maximumTotal = total
        maximumUnauthenticated = unauthenticated
    }

    /// A new connection (unauthenticated until its handshake shows a certificate): false when
    /// a cap is reached, and it must be closed.
    func open() -> Bool {
        lock.withLock {
            guard total < maximumTotal, unauthenticated < maximumUnauthenticated else {
                refusedSinceReport += 1
                return false
            }
            total += 1
            unauthenticated += 1
            return true
        }
    }

    /// The connection's peer presented a certificate of the cluster.
    /// The connection's peer presented a certificate of the cluster.
    func authenticated() {
        lock.withLock { unauthenticated -= 1 }
    }

    /// The connection ended; `authenticated`: whether `authenticated()` was called for it.
    func closed(authenticated: Bool) {
        lock.withLock {
            total -= 1
            if !authenticated { unauthenticated -= 1 }
        }
    }

    /// Logs refused connections at most every 10 s.
    func refused(logger: Logger, remote: String) {
        let report: Int? = lock.withLock {
            guard ContinuousClock.now - lastReport >= .seconds(10) else { return nil }
            lastReport = ContinuousClock.now
            defer { refusedSinceReport = 0 }
            return refusedSinceReport
        }
        if let report {
            logger.warning("refused \(report) connection(s) (the last from \(remote)): at most \(maximumTotal) connections, \(maximumUnauthenticated) without a certificate")
        }
    }
}

/// The files of a controller's data dir.
struct ControllerPaths {
    let dataDirectory: URL

    var pki: URL { PKIFiles.controllerDirectory(dataDirectory: dataDirectory) }
    var tokens: URL { dataDirectory.appendingPathComponent("tokens.json") }
    var events: URL { dataDirectory.appendingPathComponent("events.jsonl") }
    var ledger: URL { dataDirectory.appendingPathComponent("ledger.jsonl") }
    var journal: URL { dataDirectory.appendingPathComponent("journal") }

    func loadAuthority() throws -> CertificateAuthority {
        try requirePKI()
        do {
            return CertificateAuthority(identity: try PKIFiles.readIdentity(
                certificate: pki.appendingPathComponent(PKIFiles.caCertificate), key: pki.appendingPathComponent(PKIFiles.caKey)))
        } catch {
            throw ElasticError("cannot load the cluster CA: \(error)")
        }
    }

    func loadControllerIdentity() throws -> Identity {
        do {
            return try PKIFiles.readIdentity(
                certificate: pki.appendingPathComponent(PKIFiles.controllerCertificate), key: pki.appendingPathComponent(PKIFiles.controllerKey))
        } catch {
            throw ElasticError("cannot load the controller's certificate: \(error)")
        }
    }

    private func requirePKI() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dataDirectory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ElasticError("data dir \(dataDirectory.path) does not exist: create it with 'elastic certs init --dir \(dataDirectory.path)'")
        }
        guard FileManager.default.isReadableFile(atPath: dataDirectory.path), FileManager.default.isWritableFile(atPath: dataDirectory.path) else {
            throw ElasticError("data dir \(dataDirectory.path) is not readable and writable by this user")
        }
        guard FileManager.default.fileExists(atPath: pki.appendingPathComponent(PKIFiles.caCertificate).path) else {
            throw ElasticError("no cluster CA in \(pki.path): run 'elastic certs init --dir \(dataDirectory.path)' first")
        }
    }
}
