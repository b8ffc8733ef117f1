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
    var generation: Generation
    var step: UInt64
    var microBatch: UInt32
}

struct ExchangeMailKey: Hashable, Sendable {
    var generation: Generation
    var step: UInt64
    var key: ExchangeKey
}

struct RingKey: Hashable, Sendable {
    var generation: Generation
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
    private var links: [NodeID: (state: LinkState, outbox: AsyncStream<Outbound>.Continuation)] = [:]
    /// Counts configurations, so that work for an earlier one (a dial loop, a closing link)
    /// never touches a later one, even for the same generation number (a new job).
    private var epoch = 0
    private var linkWaiters: [CheckedContinuation<Void, any Error>] = []
    private var needed: Set<NodeID> = []
    /// Peers linked only for a state copy: losing one fails only a copy still awaited, not the
    /// generation's computation (a member that handed off its state leaves right after).
    private var transient: Set<NodeID> = []
    /// Links whose hello named a generation this node has not reached yet; adopted when it does.
    /// At most one per peer and `maximumParked` in all.
    private var parked: [(peer: NodeID, generation: Generation, outbox: AsyncStream<Outbound>.Continuation, state: LinkState)] = []
    static let maximumParked = 32
    /// Who may link to this node: the members of the controller's latest view (a next plan
    /// is made of them) and the peers of the current plan. Anyone else is closed at once.
    private var members: Set<NodeID> = []

    /// The controller's view changed: these nodes are members.
    func allow(members: Set<NodeID>) {
        self.members = members
    }

    // Values that wait for their consumer are bounded (a step never needs more): a peer that
    // sends what no step will take has its link closed.
    let activations = Mailbox<TensorKey, DataMessage.Tensor>(maximumCount: 16_384, maximumWeight: 1 << 30, weight: { $0.values.count * 4 })
    let gradients = Mailbox<TensorKey, DataMessage.Tensor>(maximumCount: 16_384, maximumWeight: 1 << 30, weight: { $0.values.count * 4 })
    let ring = Mailbox<RingKey, [Float]>(maximumCount: 16_384, maximumWeight: 1 << 30, weight: { $0.count * 4 })
    let exchanges = Mailbox<ExchangeMailKey, [UInt8]>(maximumCount: 16_384, maximumWeight: 1 << 30, weight: { $0.count })
    /// State copies received, by stage.
    let states = Mailbox<UInt32, [[UInt8]]>(maximumCount: 1_024, maximumWeight: 4 << 30, weight: { $0.reduce(0) { $0 + $1.count } })
    /// Answers a peer's request for a stage's state at a step (set by the trainer).
    private var stateProvider: (@Sendable (UInt32, UInt64) async -> Result<[[UInt8]], DataPlaneError>)?

    func setStateProvider(_ provider: @escaping @Sendable (UInt32, UInt64) async -> Result<[[UInt8]], DataPlaneError>) {
        stateProvider = provider
    }

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
        // A dialer's first frame is its hello: nobody buffers a large frame before it.
        settings.firstFrameMaximumSize = 4 << 10
        // A 512 MiB frame at 10 MB/s still arrives; a trickle that never ends does not.
        settings.frameDeadline = .seconds(120)
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
        for link in links.values { link.outbox.yield(.close(grace: .zero)) }
        links = [:]
        epoch += 1
        let error = DataPlaneError("the data plane stopped")
        await fail(error)
    }

    /// Switches to `generation`: drops every link and value of the previous one, then connects
    /// to the peers the plan gives this node and waits until all are linked.
    func configure(generation: Generation, peers: Set<NodeID>, transient: Set<NodeID> = [], addresses: [NodeID: String], timeout: Duration = .seconds(10)) async throws {
        // Whoever still waits for the previous configuration's links is superseded.
        let superseded = linkWaiters
        linkWaiters = []
        for waiter in superseded { waiter.resume(throwing: DataPlaneError("generation \(self.generation) was superseded by \(generation)")) }
        for link in links.values { link.outbox.yield(.close(grace: .zero)) }
        links = [:]
        epoch += 1
        let configuration = epoch
        let stale = DataPlaneError("generation \(self.generation) ended")
        await activations.fail(stale)
        await gradients.fail(stale)
        await ring.fail(stale)
        await exchanges.fail(stale)
        await states.fail(stale)
        await activations.reset()
        await gradients.reset()
        await ring.reset()
        await exchanges.reset()
        await states.reset()
        self.generation = generation
        needed = peers.union(transient)
        self.transient = transient.subtracting(peers)
        let waiting = parked
        parked = []
        for link in waiting {
            if link.generation == generation, register(link.peer, generation: generation, state: link.state, outbox: link.outbox) {
                link.state.generation = generation
            } else if link.generation > generation {
                parked.append(link)
            } else {
                link.outbox.yield(.close(grace: .zero))
            }
        }
        for peer in needed where node < peer {
            guard let text = addresses[peer], let endpoint = Endpoint(parsing: text) else {
                throw DataPlaneError("the plan has no data-plane address for \(peer)")
            }
            Task { await self.dial(peer, at: endpoint, generation: generation, configuration: configuration) }
        }
        try await waitForLinks(timeout: timeout)
    }

    /// Sends for the computation of `generation`: refused once the data plane has moved on, so
    /// work of an abandoned plan can never reach a newer one.
    func send(_ message: DataMessage, to peer: NodeID, generation sender: Generation) throws {
        guard sender == generation else { throw DataPlaneError("generation \(sender) ended") }
        guard let link = links[peer]?.outbox else { throw DataPlaneError("no link to \(peer) in generation \(generation)") }
        link.yield(.frame(message.frame(generation: generation)))
    }

    /// Wakes every waiting consumer with `error` (a lost peer, a new generation).
    func fail(_ error: any Error) async {
        await activations.fail(error)
        await gradients.fail(error)
        await ring.fail(error)
        await exchanges.fail(error)
        await states.fail(error)
    }

    // MARK: - Links

    private func waitForLinks(timeout: Duration) async throws {
        if needed.isSubset(of: Set(links.keys)) { return }
        let configuration = epoch
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.linkTimeout(configuration: configuration, after: timeout)
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { linkWaiters.append($0) }
    }

    private func linkTimeout(configuration: Int, after timeout: Duration) {
        guard configuration == epoch, !linkWaiters.isEmpty else { return }
        let missing = needed.subtracting(links.keys).map(\.value).sorted().joined(separator: ", ")
        let waiters = linkWaiters
        linkWaiters = []
        for waiter in waiters { waiter.resume(throwing: DataPlaneError("no data-plane link to \(missing) within \(timeout.shortDescription)")) }
    }

    private func register(_ peer: NodeID, generation: Generation, state: LinkState, outbox: AsyncStream<Outbound>.Continuation) -> Bool {
        guard generation == self.generation, needed.contains(peer) else { return false }
        links[peer]?.outbox.yield(.close(grace: .zero))
        links[peer] = (state, outbox)
        if needed.isSubset(of: Set(links.keys)) {
            let waiters = linkWaiters
            linkWaiters = []
            for waiter in waiters { waiter.resume() }
        }
        return true
    }

    /// A link ended: if it is still the current one for `peer`, everyone waiting on this
    /// generation's values learns that the peer is gone.
    private func unregister(_ peer: NodeID, state: LinkState) async {
        guard let current = links[peer], current.state === state else { return }
        links[peer] = nil
        let error = DataPlaneError("lost the data-plane link to \(peer)")
        if transient.contains(peer) {
            await states.fail(error)
        } else {
            await fail(error)
        }
    }

    private func dial(_ peer: NodeID, at endpoint: Endpoint, generation: Generation, configuration: Int) async {
        var settings = ChannelSettings()
        settings.maximumFrameSize = DataMessage.maximumFrameSize
        settings.readTimeout = nil
        // A 512 MiB frame at 10 MB/s still arrives; a trickle that never ends does not.
        settings.frameDeadline = .seconds(120)
        var delay = Duration.milliseconds(50)
        while configuration == epoch {
            do {
                let connection: FrameConnection
                do {
                    connection = try await FrameChannels.connect(
                        host: endpoint.host, port: endpoint.port, tls: try TLSContexts.mutualClient(identity: identity, ca: ca),
                        expecting: .node(peer.value), settings: settings)
                } catch let error as TransportError {
                    guard case .unexpectedPeer = error else { throw error }
                    logger.error("the data-plane address \(endpoint) of \(peer): \(error); not linking")
                    return
                }
                await run(connection, peer: peer, generation: generation, hello: true)
                // The link ended; dial again while this configuration still needs it.
                guard configuration == epoch, needed.contains(peer), !transient.contains(peer) else { return }
                try? await Task.sleep(for: delay)
            } catch {
                logger.debug("dialing \(peer) at \(endpoint) failed: \(error); retrying")
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    private func serveIncoming(_ connection: FrameConnection) async {
        guard let identity = try? await connection.peer.get(), identity.role == .node, let name = identity.name,
              members.contains(NodeID(name)) || needed.contains(NodeID(name)) else {
            await connection.close()
            return
        }
        // The dialer's first frame names its generation.
        await run(connection, peer: NodeID(name), generation: nil, hello: false)
    }

    private func run(_ connection: FrameConnection, peer: NodeID, generation knownGeneration: Generation?, hello: Bool) async {
        let (outbox, continuation) = AsyncStream<Outbound>.makeStream()
        let state = LinkState(generation: knownGeneration)
        if let knownGeneration {
            guard register(peer, generation: knownGeneration, state: state, outbox: continuation) else {
                await connection.close()
                return
            }
            if hello { continuation.yield(.frame(DataMessage.hello.frame(generation: knownGeneration))) }
        }
        _ = await ConnectionPump.run(connection, outbox: outbox) { frame in
            await self.receive(frame, from: peer, state: state, outbox: continuation)
        }
        await unregister(peer, state: state)
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
                // The peer got its assignment first: keep the link until this node catches up
                // (one per peer: a newer hello replaces the older; a bounded number in all).
                if let index = parked.firstIndex(where: { $0.peer == peer }) {
                    parked[index].outbox.yield(.close(grace: .zero))
                    parked.remove(at: index)
                }
                guard parked.count < Self.maximumParked else {
                    logger.warning("refused an early data-plane link from \(peer) for generation \(frame.generation): \(Self.maximumParked) links already wait")
                    return false
                }
                parked.append((peer, frame.generation, outbox, state))
                return true
            }
            guard register(peer, generation: frame.generation, state: state, outbox: outbox) else {
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
        var kept = true
        switch message {
        case .hello:
            break
        case .activation(let tensor):
            kept = await activations.deliver(tensor, for: TensorKey(generation: linkGeneration, step: tensor.step, microBatch: tensor.microBatch))
        case .gradient(let tensor):
            kept = await gradients.deliver(tensor, for: TensorKey(generation: linkGeneration, step: tensor.step, microBatch: tensor.microBatch))
        case .ring(let step, let chunk):
            kept = await ring.deliver(chunk.values, for: RingKey(generation: linkGeneration, step: step, chunk: chunk.key))
        case .stateRequest(let stage, let step):
            guard let provider = stateProvider else { return false }
            let generation = linkGeneration
            Task {
                switch await provider(stage, step) {
                case .success(let layers):
                    logger.info("sending the state of stage \(stage) at step \(step) to \(peer)")
                    outbox.yield(.frame(DataMessage.stateReply(stage: stage, step: step, layers: layers).frame(generation: generation)))
                case .failure(let error):
                    logger.error("cannot send the state of stage \(stage) to \(peer): \(error)")
                    outbox.yield(.close(grace: .zero))
                }
            }
        case .stateReply(let stage, _, let layers):
            kept = await states.deliver(layers, for: stage)
        case .exchange(let step, let key, let bytes):
            kept = await exchanges.deliver(bytes, for: ExchangeMailKey(generation: linkGeneration, step: step, key: key))
        }
        if !kept {
            logger.warning("\(peer) sent more values than any step waits for; closing its link")
        }
        return kept
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
    let generation: Generation

    func send(_ chunk: RingChunk) async throws {
        try await plane.send(.ring(step: step, chunk), to: next, generation: generation)
    }

    func receive(_ key: RingChunk.Key) async throws -> [Float] {
        try await plane.ring.take(RingKey(generation: generation, step: step, chunk: key))
    }
}

/// The compressed gradient exchange of one stage's replicas for one step, over the data plane.
struct DataPlaneExchangeLink: ExchangeLink {
    let plane: DataPlane
    let next: NodeID
    let step: UInt64
    let generation: Generation

    func send(_ key: ExchangeKey, _ bytes: [UInt8]) async throws {
        try await plane.send(.exchange(step: step, key: key, bytes: bytes), to: next, generation: generation)
    }

    func receive(_ key: ExchangeKey) async throws -> [UInt8] {
        try await plane.exchanges.take(ExchangeMailKey(generation: generation, step: step, key: key))
    }
}
