import ElasticCore
import ElasticTransport
import ElasticWire
import NIOCore
import NIOSSL

/// One request, one reply, over a fresh TLS connection: what the admin commands and the
/// bootstrap of a joining worker need. The server must present the controller's certificate
/// (`expecting`), so a node's certificate cannot pose as the controller to collect a token or
/// an admin request; only the CA fetch, which sends nothing and checks the answer against the
/// pinned hash, passes nil.
public enum ControlClient {
    public static func exchange(
        _ request: ControlMessage, with endpoint: Endpoint, tls: NIOSSLContext, expecting: ExpectedPeer? = .controller,
        timeout: Duration = .seconds(10)
    ) async throws -> ControlMessage {
        do {
            return try await withThrowingTaskGroup(of: ControlMessage.self) { group in
                group.addTask {
                    let connection = try await FrameChannels.connect(host: endpoint.host, port: endpoint.port, tls: tls, expecting: expecting)
                    return try await connection.channel.executeThenClose { inbound, outbound in
                        try await outbound.write(request.frame(generation: .zero))
                        for try await frame in inbound {
                            let reply = try ControlMessage(frame: frame)
                            if case .refused(let refused) = reply { throw refused }
                            return reply
                        }
                        throw ChannelError.eof
                    }
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw ElasticError("no answer from \(endpoint) within \(timeout.shortDescription)")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch {
            throw ElasticError.talking(to: endpoint, error)
        }
    }
}
