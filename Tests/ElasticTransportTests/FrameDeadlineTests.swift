import ElasticWire
import NIOCore
import NIOEmbedded
import Testing
@testable import ElasticTransport

/// The frame codec's limits on an embedded channel (time moved by hand): a frame that trickles
/// in is cut off at its deadline however often bytes arrive, and a whole frame resets it.
@Suite struct FrameDeadlineTests {
    private func channel(deadline: Duration) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameCodecHandler(maximumFrameSize: 1 << 20, frameDeadline: deadline))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func aTrickledFrameIsCutOffAtItsDeadline() throws {
        let channel = try channel(deadline: .seconds(10))
        // A 1 MiB frame announced, one byte a second: the read timeout would never fire.
        var header = WireWriter()
        header.write(UInt32(1 << 20 - 4))
        try channel.writeInbound(ByteBuffer(bytes: header.bytes))
        for second in 1...9 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
            try channel.writeInbound(ByteBuffer(bytes: [UInt8(second)]))
            #expect(channel.isActive, "closed after \(second) s")
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "a frame begun 10 s ago and still not complete must close the connection")
        // The peer is told why.
        let reply = try channel.readOutbound(as: ByteBuffer.self)
        #expect(reply.map { String(decoding: $0.readableBytesView, as: UTF8.self).contains("not complete within 10s") } == true)
        _ = try? channel.finish()
    }

    @Test func aLargeFirstFrameIsRefusedFromItsLength() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameCodecHandler(maximumFrameSize: 1 << 20, firstFrameMaximumSize: 4096))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var header = WireWriter()
        header.write(UInt32(1 << 19))
        #expect(throws: WireError.self) { try channel.writeInbound(ByteBuffer(bytes: header.bytes)) }
        #expect(!channel.isActive)
        _ = try? channel.finish()

        // After a small first frame, the full limit applies.
        let second = EmbeddedChannel()
        try second.pipeline.syncOperations.addHandler(FrameCodecHandler(maximumFrameSize: 1 << 20, firstFrameMaximumSize: 4096))
        try second.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try second.writeInbound(ByteBuffer(bytes: ControlMessage.heartbeatAck.frame(generation: .zero).encoded()))
        let big = Frame(kind: ControlMessage.Kind.heartbeatAck.rawValue, generation: .zero, payload: [UInt8](repeating: 0, count: 100_000))
        try second.writeInbound(ByteBuffer(bytes: big.encoded()))
        #expect(second.isActive)
        #expect(try second.readInbound(as: Frame.self) != nil && second.readInbound(as: Frame.self) != nil)
        _ = try? second.finish()
    }

    @Test func wholeFramesResetTheDeadline() throws {
        let channel = try channel(deadline: .seconds(2))
        let frame = ControlMessage.heartbeatAck.frame(generation: .zero).encoded()
        for _ in 0..<10 {
            // Each frame arrives in two halves a second apart: never 2 s on one frame.
            try channel.writeInbound(ByteBuffer(bytes: frame[..<3]))
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
            try channel.writeInbound(ByteBuffer(bytes: frame[3...]))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
            #expect(channel.isActive)
            #expect(try channel.readInbound(as: Frame.self) != nil)
        }
        _ = try? channel.finish()
    }
}
