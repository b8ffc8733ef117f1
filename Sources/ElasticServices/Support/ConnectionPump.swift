import ElasticTransport
import ElasticWire
import NIOCore

/// What a shell queues for a connection: a frame, or the end of it.
public enum Outbound: Sendable {
    case frame(Frame)
    /// Close after giving the peer `grace` to read what was sent and close first.
    case close(grace: Duration)
}

/// Runs one connection: frames queued on `outbox` are written in order, every frame read is
/// handed to `onFrame`, and the connection ends when either side closes, `.close` is queued, or
/// `onFrame` returns false. Errors end the connection; they are returned, never thrown.
public enum ConnectionPump {
    @discardableResult
    public static func run(
        _ connection: FrameConnection,
        outbox: AsyncStream<Outbound>,
        onFrame: @escaping @Sendable (Frame) async -> Bool
    ) async -> (any Error)? {
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await item in outbox {
                            switch item {
                            case .frame(let frame):
                                try await outbound.write(frame)
                            case .close(let grace):
                                try? await Task.sleep(for: grace)
                                return
                            }
                        }
                    }
                    group.addTask {
                        for try await frame in inbound {
                            guard await onFrame(frame) else { return }
                        }
                    }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            }
            return nil
        } catch {
            return error
        }
    }
}
