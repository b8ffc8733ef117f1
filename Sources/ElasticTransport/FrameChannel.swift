import ElasticCore
import ElasticWire
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import X509

/// Who is at the other end of a TLS connection, from the certificate it presented.
public struct PeerIdentity: Sendable, Equatable {
    /// The certificate's common name (a node id for nodes), or nil without a certificate.
    public let name: String?
    public let role: Role?
    public let certificateSerial: String?
    /// When the certificate expires: a session must not outlive it.
    public let notValidAfter: Date?

    public static let anonymous = PeerIdentity(name: nil, role: nil, certificateSerial: nil)

    init(certificate: NIOSSLCertificate?) {
        guard let certificate, let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else {
            self = .anonymous
            return
        }
        self.init(name: PKI.commonName(of: parsed), role: PKI.role(of: parsed), certificateSerial: parsed.serialNumber.description,
                  notValidAfter: parsed.notValidAfter)
    }

    init(name: String?, role: Role?, certificateSerial: String?, notValidAfter: Date? = nil) {
        self.name = name
        self.role = role
        self.certificateSerial = certificateSerial
        self.notValidAfter = notValidAfter
    }
}

/// One framed, TLS-protected connection: frames in, frames out, and who the peer is.
public struct FrameConnection: Sendable {
    public let channel: NIOAsyncChannel<Frame, Frame>
    /// Completes when the TLS handshake does, with the peer's identity.
    public let peer: EventLoopFuture<PeerIdentity>
    public let remoteAddress: String
    /// This side's IP address on the connection (the route to the peer), when known.
    public let localIP: String?

    /// Closes a connection that will not be used. Every `FrameConnection` must end here or in
    /// `channel.executeThenClose`: its writer must be finished before it is released.
    public func close() async {
        try? await channel.executeThenClose { _, outbound in outbound.finish() }
    }
}

/// Encodes outgoing frames and decodes incoming bytes with `FrameDecoder`. Bad input is answered
/// with a `refused(protocolError)` frame and the connection is closed; so is a peer that sends
/// nothing for `readTimeout`, one whose frame, once begun, is not complete within
/// `frameDeadline` (a trickle that keeps the read timeout from ever firing), and an anonymous
/// peer (no client certificate) whose frame is larger than `anonymousMaximumFrameSize`.
final class FrameCodecHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Frame
    typealias OutboundIn = Frame
    typealias OutboundOut = ByteBuffer

    private var decoder: FrameDecoder
    private var failed = false
    private let frameDeadline: Duration?
    private let anonymousMaximumFrameSize: Int?
    private var frameTimer: Scheduled<Void>?
    /// The limit after the first frame, while the first one has a smaller one.
    private var afterFirstFrame: Int?

    init(maximumFrameSize: Int, frameDeadline: Duration? = nil, anonymousMaximumFrameSize: Int? = nil, firstFrameMaximumSize: Int? = nil) {
        decoder = FrameDecoder(maximumFrameSize: maximumFrameSize)
        if let first = firstFrameMaximumSize, first < maximumFrameSize {
            decoder.maximumFrameSize = max(Frame.headerSize, first)
            afterFirstFrame = maximumFrameSize
        }
        self.frameDeadline = frameDeadline
        self.anonymousMaximumFrameSize = anonymousMaximumFrameSize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        decoder.append(buffer.readableBytesView)
        do {
            while let frame = try decoder.next() {
                // A whole frame: the next one gets its own deadline.
                frameTimer?.cancel()
                frameTimer = nil
                if let limit = afterFirstFrame {
                    decoder.maximumFrameSize = limit
                    afterFirstFrame = nil
                }
                context.fireChannelRead(wrapInboundOut(frame))
            }
        } catch {
            fail(context: context, error, message: "malformed frame: \(error.message)")
            return
        }
        if decoder.bufferedByteCount > 0, frameTimer == nil, let frameDeadline {
            let deadline = frameDeadline
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            frameTimer = context.eventLoop.scheduleTask(in: .nanoseconds(deadline.nanosecondsClamped)) {
                let (handler, context) = bound.value
                guard !handler.failed else { return }
                handler.fail(context: context, TransportError.timedOut("receiving a frame: not complete within \(deadline.shortDescription)"),
                             message: "a frame was not complete within \(deadline.shortDescription)")
            }
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error, message: String) {
        failed = true
        frameTimer?.cancel()
        frameTimer = nil
        let refusal = ControlMessage.refused(Refused(.protocolError, message)).frame(generation: .zero)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: refusal.encoded())), promise: nil)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        frameTimer?.cancel()
        frameTimer = nil
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: frame.encoded())), promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.fireErrorCaught(TransportError.idleTimeout)
            context.close(promise: nil)
            return
        }
        // A peer without a certificate may only ask for the CA or bootstrap: small frames.
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls, let limit = anonymousMaximumFrameSize,
           (try? context.pipeline.syncOperations.nioSSL_peerCertificate()) == nil {
            decoder.maximumFrameSize = max(Frame.headerSize, min(limit, decoder.maximumFrameSize))
            afterFirstFrame = afterFirstFrame.map { min($0, limit) }
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Fulfils a promise with the peer's identity once the TLS handshake completes, or fails it when
/// the connection ends first.
final class PeerIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<PeerIdentity>
    private var completed = false

    init(promise: EventLoopPromise<PeerIdentity>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls, !completed {
            completed = true
            let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate()
            promise.succeed(PeerIdentity(certificate: certificate))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(TransportError.closedDuringHandshake)
        context.fireChannelInactive()
    }

    /// A channel closed before it was ever active never sees `channelInactive`.
    func handlerRemoved(context: ChannelHandlerContext) {
        fail(TransportError.closedDuringHandshake)
    }

    private func fail(_ error: any Error) {
        guard !completed else { return }
        completed = true
        promise.fail(error)
    }
}

/// Who a client expects at the other end. The CA signs every role's certificate, so trusting
/// the CA is not enough: a node's certificate (which also serves its data plane) must never pass
/// for the controller, nor one node for another.
public enum ExpectedPeer: Sendable, Equatable {
    /// The controller (its certificate's role): what members, admins and bootstraps talk to.
    case controller
    /// The node the plan names, on the data plane.
    case node(String)

    func admits(_ peer: PeerIdentity) -> Bool {
        switch self {
        case .controller: peer.role == .controller
        case .node(let name): peer.role == .node && peer.name == name
        }
    }

    public var description: String {
        switch self {
        case .controller: "the controller"
        case .node(let name): "node \(name)"
        }
    }
}

public enum TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    case idleTimeout
    case closedDuringHandshake
    case timedOut(String)
    /// The server's certificate is from the cluster CA but names another role or node.
    case unexpectedPeer(expected: ExpectedPeer, presented: PeerIdentity)

    public var description: String {
        switch self {
        case .idleTimeout: "the peer sent nothing for too long"
        case .closedDuringHandshake: "the connection closed during the TLS handshake"
        case .timedOut(let what): "timed out \(what)"
        case let .unexpectedPeer(expected, presented):
            "the server presented the certificate of \(presented.role?.rawValue ?? "no role") '\(presented.name ?? "?")', not \(expected.description)'s: it is not who this address should be (a node or an impostor listening there); nothing was sent"
        }
    }
}

/// Settings of a framed TLS channel.
public struct ChannelSettings: Sendable {
    public var maximumFrameSize: Int = Frame.defaultMaximumSize
    /// Close a connection that sends nothing for this long (nil: never).
    public var readTimeout: Duration? = .seconds(30)
    public var connectTimeout: Duration = .seconds(5)
    /// Close a connection whose TLS handshake has not completed after this long.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Close a connection whose frame, once its first byte arrived, is not complete after this
    /// long: the read timeout counts silence, this counts a trickle (nil: no limit).
    public var frameDeadline: Duration? = .seconds(30)
    /// The largest frame a peer without a client certificate may send (nil: `maximumFrameSize`).
    public var anonymousMaximumFrameSize: Int? = nil
    /// The largest first frame a peer may send (a hello), before it has said who it is in the
    /// protocol (nil: `maximumFrameSize`).
    public var firstFrameMaximumSize: Int? = nil

    public init() {}
}

public enum FrameChannels {
    static func configure(
        _ channel: any Channel, tls: NIOSSLHandler, settings: ChannelSettings
    ) throws -> FrameConnection {
        let promise = channel.eventLoop.makePromise(of: PeerIdentity.self)
        let sync = channel.pipeline.syncOperations
        do {
            try sync.addHandler(tls)
            try sync.addHandler(PeerIdentityHandler(promise: promise))
        } catch {
            promise.fail(error)
            throw error
        }
        if let timeout = settings.readTimeout {
            try sync.addHandler(IdleStateHandler(readTimeout: TimeAmount.nanoseconds(timeout.nanosecondsClamped)))
        }
        try sync.addHandler(FrameCodecHandler(
            maximumFrameSize: settings.maximumFrameSize, frameDeadline: settings.frameDeadline,
            anonymousMaximumFrameSize: settings.anonymousMaximumFrameSize, firstFrameMaximumSize: settings.firstFrameMaximumSize))
        // A handshake that never completes (a client that opens and stalls) is cut off.
        let handshake = channel.eventLoop.scheduleTask(in: .nanoseconds(settings.handshakeTimeout.nanosecondsClamped)) {
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in handshake.cancel() }
        let async = try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
        return FrameConnection(channel: async, peer: promise.futureResult, remoteAddress: describe(channel.remoteAddress), localIP: channel.localAddress?.ipAddress)
    }

    /// Binds a TLS listener; every accepted connection arrives as a `FrameConnection`.
    public static func listen(
        host: String, port: Int, tls: NIOSSLContext, settings: ChannelSettings = ChannelSettings(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NIOAsyncChannel<FrameConnection, Never> {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configure(channel, tls: NIOSSLServerHandler(context: tls), settings: settings)
                }
            }
    }

    /// Connects with TLS and waits for the handshake; with `expecting`, a server whose
    /// certificate names another role or node is refused before anything is sent.
    public static func connect(
        host: String, port: Int, tls: NIOSSLContext, expecting: ExpectedPeer?, settings: ChannelSettings = ChannelSettings(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> FrameConnection {
        let connection = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(settings.connectTimeout.nanosecondsClamped))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configure(channel, tls: NIOSSLClientHandler(context: tls, serverHostname: nil), settings: settings)
                }
            }
        do {
            let peer = try await connection.peer.get()
            if let expecting, !expecting.admits(peer) {
                throw TransportError.unexpectedPeer(expected: expecting, presented: peer)
            }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }
}

/// `ip:port`, with brackets around IPv6 addresses.
func describe(_ address: SocketAddress?) -> String {
    guard let address, let ip = address.ipAddress, let port = address.port else { return address?.description ?? "?" }
    return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
}
