#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One answer of the read-only HTTP listener.
public struct HTTPReply: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: [UInt8]

    public init(status: HTTPResponseStatus = .ok, contentType: String, body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    public static func text(_ text: String, status: HTTPResponseStatus = .ok) -> HTTPReply {
        HTTPReply(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }
}

/// The tiny HTTP/1.1 listener behind `/metrics`, the dashboard and `/api/state`: plain HTTP
/// (unauthenticated, read-only, loopback by default), GET and HEAD only (anything else is 405),
/// one request per connection, an idle connection closed after 10 s. Each connection is its own
/// task (as in NIOTCPEchoServer), so a slow client cannot hold up the others.
///
/// A request's `Host` must be an IP address, `localhost`, or a name the operator allowed
/// (`--http-allow-host`): a page on another site cannot read `/api/state` by pointing its own
/// host name at this address (DNS rebinding). Others get 403.
public final class StatusHTTPServer: Sendable {
    /// Answers a GET of `path` (without the query); nil is a 404.
    public typealias Route = @Sendable (_ path: String) async -> HTTPReply?

    private let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    /// The bound address (port 0 asks for a free port).
    public let address: Endpoint
    /// Host names besides IP addresses and `localhost` that requests may name (lowercase).
    private let allowedHosts: Set<String>

    private init(channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>, address: Endpoint, allowedHosts: Set<String>) {
        self.channel = channel
        self.address = address
        self.allowedHosts = allowedHosts
    }

    /// Binds `endpoint`; throws an `ElasticError` that names the address when it cannot.
    public static func bind(_ endpoint: Endpoint, allowedHosts: [String] = [], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> StatusHTTPServer {
        let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: endpoint.host, port: endpoint.port) { child in
                    child.eventLoop.makeCompletedFuture {
                        let sync = child.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(readTimeout: .seconds(10)))
                        try sync.addHandler(CloseWhenIdle())
                        try sync.configureHTTPServerPipeline(withErrorHandling: true)
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: child)
                    }
                }
        } catch {
            let reason = (error as? IOError)?.errnoCode == EADDRINUSE ? "the address is in use" : "\(error)"
            throw ElasticError("cannot serve HTTP on \(endpoint): \(reason); choose another address with --http HOST:PORT (port 0 picks a free one) or turn it off with --http off")
        }
        let port = channel.channel.localAddress?.port ?? endpoint.port
        return StatusHTTPServer(channel: channel, address: Endpoint(host: endpoint.host, port: port), allowedHosts: Set(allowedHosts.map { $0.lowercased() }))
    }

    /// Serves until `close()`; each request is answered by `route`.
    public func run(logger: Logger, route: @escaping Route) async {
        do {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { [allowedHosts] in await Self.serve(connection, allowedHosts: allowedHosts, route: route, logger: logger) }
                    }
                }
            }
        } catch {
            logger.debug("HTTP listener \(address) ended: \(error)")
        }
    }

    public func close() {
        channel.channel.close(promise: nil)
    }

    private static func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, allowedHosts: Set<String>, route: Route, logger: Logger) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let request):
                        head = request
                    case .body:
                        continue
                    case .end:
                        guard let request = head else { return }
                        let reply = await answer(request, allowedHosts: allowedHosts, route: route)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: reply.contentType)
                        headers.add(name: "Content-Length", value: String(reply.body.count))
                        headers.add(name: "Cache-Control", value: "no-store")
                        headers.add(name: "Connection", value: "close")
                        if reply.status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
                        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: reply.status, headers: headers)))
                        if request.method != .HEAD, !reply.body.isEmpty {
                            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: reply.body))))
                        }
                        try await outbound.write(.end(nil))
                        return
                    }
                }
            }
        } catch {
            logger.trace("HTTP connection ended: \(error)")
        }
    }

    /// GET and HEAD of known paths; 403 for a Host this listener does not serve, 405 for other
    /// methods, 404 for other paths.
    static func answer(_ request: HTTPRequestHead, allowedHosts: Set<String> = [], route: Route) async -> HTTPReply {
        let hosts = request.headers["Host"]
        guard hosts.count <= 1, hosts.allSatisfy({ isServed(host: $0, allowed: allowedHosts) }) else {
            let named = hosts.first.map { "'\($0.prefix(100))'" } ?? "several hosts"
            return .text("Host \(named) is not served here: use the IP address, localhost, or start the listener with --http-allow-host NAME\n", status: .forbidden)
        }
        guard request.method == .GET || request.method == .HEAD else {
            return .text("\(request.method.rawValue) is not allowed: this listener is read-only (GET and HEAD)\n", status: .methodNotAllowed)
        }
        let path = String(request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        return await route(path) ?? .text("no page at \(path); try / (dashboard), /metrics or /api/state\n", status: .notFound)
    }
}

extension StatusHTTPServer {
    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) names an IP address,
    /// `localhost`, or an allowed name.
    static func isServed(host value: String, allowed: Set<String>) -> Bool {
        var host = Substring(value.trimmingCharacters(in: .whitespaces))
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return false }
            var address = in6_addr()
            return inet_pton(AF_INET6, String(host[host.index(after: host.startIndex)..<close]), &address) == 1
        }
        if let colon = host.lastIndex(of: ":") {
            guard host[host.index(after: colon)...].allSatisfy(\.isNumber) else { return false }
            host = host[..<colon]
        }
        let name = host.lowercased()
        if name == "localhost" || allowed.contains(name) { return true }
        var address = in_addr()
        return inet_pton(AF_INET, name, &address) == 1
    }
}

/// Closes a connection on the `IdleStateHandler`'s read timeout.
private final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
