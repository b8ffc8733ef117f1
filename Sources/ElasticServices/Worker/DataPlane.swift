import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import NIOCore
import NIOSSL
import X509

/// Keys under which data-plane values wait for their consumer.
struct TensorKey: Hashable, Sendable {
    var step: UInt64
    var microBatch: UInt32
}

struct RingKey: Hashable, Sendable {
    var step: UInt64
    var chunk: RingChunk.Key
}

public struct DataPlaneError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A worker's links to its peers: a mutual-TLS listener, and for each generation one link per
/// peer the plan needs (previous and next stage of its replica, previous and next replica of its
/// stage). The node with the smaller id dials. Incoming values go to mailboxes by key; values
/// of another generation are dropped.
actor DataPlane {
    private let identity: Identity
    private let ca: Certificate
    private let logger: Logger
    private let node: NodeID
    private var server: NIOAsyncChannel<FrameConnection, Never>?
    private var acceptTask: Task<Void, Never>?
    private(set) var address: Endpoint?

    private var generation: Generation = .zero
    private var links: [NodeID: AsyncStream<Outbound>.Continuation] = [:]
    private var linkWaiters: [CheckedContinuation<Void, any Error>] = []
    private var needed: Set<NodeID> = []
    /// Links whose hello named a generation this node has not reached yet; adopted when it does.
    private var parked: [(peer: NodeID, generation: Generation, outbox: AsyncStream<Outbound>.Continuation, state: LinkState)] = []

    let activations = Mailbox<TensorKey, DataMessage.Tensor>()
    let gradients = Mailbox<TensorKey, DataMessage.Tensor>()
    let ring = Mailbox<RingKey, [Float]>()

    init(identity: Identity, ca: Certificate, node: NodeID, logger: Logger) {
        self.identity = identity
        self.ca = ca
        self.node = node
        self.logger = logger
    }

    /// Binds the listener (`host`, port 0 unless given) and starts accepting peers.
    func start(host: String, port: Int = 0, advertise: String? = nil) async throws -> Endpoint {
        var settings = ChannelSettings()
        settings.maximumFrameSize = DataMessage.maximumFrameSize
        settings.readTimeout = nil
        let server = try await FrameChannels.listen(host: host, port: port, tls: try TLSContexts.peerServer(identity: identity, ca: ca), settings: settings)
        self.server = server
        let bound = Endpoint(host: advertise ?? host, port: server.channel.localAddress?.port ?? port)
        address = bound
        acceptTask = Task { [weak self] in
            try? await server.executeThenClose { inbound in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in inbound {
                            group.addTask { await self?.serveIncoming(connection) }
                        }
                    } catch {}
                }
            }
        }
        return bound
    }

    func stop() async {
        server?.channel.close(promise: nil)
        acceptTask?.cancel()
        for link in links.values { link.yield(.close(grace: .zero)) }
        links = [:]
        let error = DataPlaneError("the data plane stopped")
        await fail(error)
    }

    /// Switches to `generation`: drops every link and value of the previous one, then connects
    /// to the peers the plan gives this node and waits until all are linked.
    func configure(generation: Generation, peers: Set<NodeID>, addresses: [NodeID: String], timeout: Duration = .seconds(30)) async throws {
        for link in links.values { link.yield(.close(grace: .zero)) }
        links = [:]
        let stale = DataPlaneError("generation \(self.generation) ended")
        await activations.fail(stale)
        await gradients.fail(stale)
        await ring.fail(stale)
        await activations.reset()
        await gradients.reset()
        await ring.reset()
        self.generation = generation
        needed = peers
        let waiting = parked
        parked = []
        for link in waiting {
            if link.generation == generation, register(link.peer, generation: generation, outbox: link.outbox) {
                link.state.generation = generation
            } else if link.generation > generation {
                parked.append(link)
            } else {
                link.outbox.yield(.close(grace: .zero))
            }
        }
        for peer in peers where node < peer {
            guard let text = addresses[peer], let endpoint = Endpoint(parsing: text) else {
                throw DataPlaneError("the plan has no data-plane address for \(peer)")
            }
            Task { await self.dial(peer, at: endpoint, generation: generation) }
        }
        try await waitForLinks(timeout: timeout)
    }

    func send(_ message: DataMessage, to peer: NodeID) throws {
        guard let link = links[peer] else { throw DataPlaneError("no link to \(peer) in generation \(generation)") }
        link.yield(.frame(message.frame(generation: generation)))
    }

    /// Wakes every waiting consumer with `error` (a lost peer, a new generation).
    func fail(_ error: any Error) async {
        await activations.fail(error)
        await gradients.fail(error)
        await ring.fail(error)
    }

    // MARK: - Links

    private func waitForLinks(timeout: Duration) async throws {
        if needed.isSubset(of: Set(links.keys)) { return }
        let generation = self.generation
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.linkTimeout(generation: generation, after: timeout)
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { linkWaiters.append($0) }
    }

    private func linkTimeout(generation: Generation, after timeout: Duration) {
        guard generation == self.generation, !linkWaiters.isEmpty else { return }
        let missing = needed.subtracting(links.keys).map(\.value).sorted().joined(separator: ", ")
        let waiters = linkWaiters
        linkWaiters = []
        for waiter in waiters { waiter.resume(throwing: DataPlaneError("no data-plane link to \(missing) within \(timeout.shortDescription)")) }
    }

    private func register(_ peer: NodeID, generation: Generation, outbox: AsyncStream<Outbound>.Continuation) -> Bool {
        guard generation == self.generation, needed.contains(peer) else { return false }
        links[peer]?.yield(.close(grace: .zero))
        links[peer] = outbox
        if needed.isSubset(of: Set(links.keys)) {
            let waiters = linkWaiters
            linkWaiters = []
            for waiter in waiters { waiter.resume() }
        }
        return true
    }

    private func unregister(_ peer: NodeID, generation: Generation) async {
        guard generation == self.generation, links[peer] != nil else { return }
        links[peer] = nil
        await fail(DataPlaneError("lost the data-plane link to \(peer)"))
    }

    private func dial(_ peer: NodeID, at endpoint: Endpoint, generation: Generation) async {
        var settings = ChannelSettings()
        settings.maximumFrameSize = DataMessage.maximumFrameSize
        settings.readTimeout = nil
        var delay = Duration.milliseconds(50)
        while generation == self.generation {
            do {
                let connection = try await FrameChannels.connect(host: endpoint.host, port: endpoint.port, tls: try TLSContexts.mutualClient(identity: identity, ca: ca), settings: settings)
                let identity = try await connection.peer.get()
                guard identity.name == peer.value, identity.role == .node else {
                    logger.error("the data-plane address \(endpoint) of \(peer) is served by \(identity.name ?? "an unknown peer"); not linking")
                    try? await connection.channel.channel.close()
                    return
                }
                await run(connection, peer: peer, generation: generation, hello: true)
                // The link ended; dial again while this generation still needs it.
                guard generation == self.generation, needed.contains(peer) else { return }
                try? await Task.sleep(for: delay)
            } catch {
                logger.debug("dialing \(peer) at \(endpoint) failed: \(error); retrying")
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    private func serveIncoming(_ connection: FrameConnection) async {
        guard let identity = try? await connection.peer.get(), identity.role == .node, let name = identity.name else {
            try? await connection.channel.channel.close()
            return
        }
        // The dialer's first frame names its generation.
        await run(connection, peer: NodeID(name), generation: nil, hello: false)
    }

    private func run(_ connection: FrameConnection, peer: NodeID, generation knownGeneration: Generation?, hello: Bool) async {
        let (outbox, continuation) = AsyncStream<Outbound>.makeStream()
        let state = LinkState(generation: knownGeneration)
        if let knownGeneration {
            guard register(peer, generation: knownGeneration, outbox: continuation) else { return }
            if hello { continuation.yield(.frame(DataMessage.hello.frame(generation: knownGeneration))) }
        }
        _ = await ConnectionPump.run(connection, outbox: outbox) { frame in
            await self.receive(frame, from: peer, state: state, outbox: continuation)
        }
        if let generation = state.generation {
            await unregister(peer, generation: generation)
        }
    }

    /// One frame from `peer`; false ends the link.
    private func receive(_ frame: Frame, from peer: NodeID, state: LinkState, outbox: AsyncStream<Outbound>.Continuation) async -> Bool {
        let message: DataMessage
        do {
            message = try DataMessage(frame: frame)
        } catch {
            logger.warning("malformed data-plane message from \(peer): \(error)")
            return false
        }
        guard let linkGeneration = state.generation else {
            guard case .hello = message else { return false }
            if frame.generation > generation {
                // The peer got its assignment first: keep the link until this node catches up.
                parked.append((peer, frame.generation, outbox, state))
                return true
            }
            guard register(peer, generation: frame.generation, outbox: outbox) else {
                logger.info("refused a data-plane link from \(peer) for generation \(frame.generation) (this node is at \(generation))")
                return false
            }
            state.generation = frame.generation
            return true
        }
        guard frame.generation == linkGeneration, linkGeneration == generation else {
            logger.info("dropped a data-plane message of generation \(frame.generation) from \(peer)")
            return false
        }
        switch message {
        case .hello:
            break
        case .activation(let tensor):
            await activations.deliver(tensor, for: TensorKey(step: tensor.step, microBatch: tensor.microBatch))
        case .gradient(let tensor):
            await gradients.deliver(tensor, for: TensorKey(step: tensor.step, microBatch: tensor.microBatch))
        case .ring(let step, let chunk):
            await ring.deliver(chunk.values, for: RingKey(step: step, chunk: chunk.key))
        }
        return true
    }
}

/// The generation a link speaks for, once its hello arrived.
private final class LinkState: @unchecked Sendable {
    private let lock = NSLock()
    private var _generation: Generation?
    init(generation: Generation?) { _generation = generation }
    var generation: Generation? {
        get { lock.withLock { _generation } }
        set { lock.withLock { _generation = newValue } }
    }
}

/// The ring of one stage's replicas for one step, over the data plane.
struct DataPlaneRingLink: RingLink {
    let plane: DataPlane
    let next: NodeID
    let step: UInt64

    func send(_ chunk: RingChunk) async throws {
        try await plane.send(.ring(step: step, chunk), to: next)
    }

    func receive(_ key: RingChunk.Key) async throws -> [Float] {
        try await plane.ring.take(RingKey(step: step, chunk: key))
    }
}
