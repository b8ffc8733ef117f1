import ElasticCore

/// One message on the wire:
///
///     length  u32  bytes after this field (header rest + payload)
///     version u8   protocol version (1)
///     kind    u8   message kind
///     gen     u64  the sender's generation
///     payload …    the message fields (see ControlMessage)
///
/// Integers are big-endian. A frame longer than the decoder's maximum is refused from its
/// length field alone, before its bytes are buffered.
public struct Frame: Sendable, Equatable {
    public static let version: UInt8 = 1
    /// Bytes of the header after the length field.
    public static let headerRest = 10
    public static let headerSize = 4 + headerRest
    /// The default largest frame on the control plane.
    public static let defaultMaximumSize = 1 << 20

    public var kind: UInt8
    public var generation: Generation
    public var payload: [UInt8]

    public init(kind: UInt8, generation: Generation, payload: [UInt8]) {
        self.kind = kind
        self.generation = generation
        self.payload = payload
    }

    /// The frame's bytes, header included.
    public func encoded() -> [UInt8] {
        var writer = WireWriter(capacity: Frame.headerSize + payload.count)
        writer.write(UInt32(Frame.headerRest + payload.count))
        writer.write(Frame.version)
        writer.write(kind)
        writer.write(generation.value)
        var bytes = writer.bytes
        bytes.append(contentsOf: payload)
        return bytes
    }
}

/// Cuts a byte stream into frames. Feed it bytes as they arrive and pull frames until it
/// returns nil; any error is final for the connection.
public struct FrameDecoder: Sendable {
    /// Frames longer than this are refused from their length field on, before their bytes are
    /// buffered; it may change between frames (a limit for a connection's first frame, say).
    public var maximumFrameSize: Int {
        willSet { precondition(newValue >= Frame.headerSize, "maximumFrameSize must hold at least a header") }
    }
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maximumFrameSize: Int = Frame.defaultMaximumSize) {
        precondition(maximumFrameSize >= Frame.headerSize, "maximumFrameSize must hold at least a header")
        self.maximumFrameSize = maximumFrameSize
    }

    /// Bytes received but not yet part of a returned frame.
    public var bufferedByteCount: Int { buffer.count - start }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, or nil when more bytes are needed.
    public mutating func next() throws(WireError) -> Frame? {
        guard bufferedByteCount >= 4 else { return nil }
        var header = WireReader(buffer[start..<buffer.count])
        let length = Int(try header.read(UInt32.self))
        guard length >= Frame.headerRest else {
            throw WireError(.frameTooShort, "frame length \(length) is shorter than its \(Frame.headerRest)-byte header")
        }
        guard length + 4 <= maximumFrameSize else {
            throw WireError(.frameTooLarge, "frame of \(length + 4) bytes exceeds the maximum of \(maximumFrameSize)")
        }
        // The version is checked as soon as it arrives, so a peer speaking another protocol is
        // told so instead of waiting for bytes it will never send.
        if bufferedByteCount >= 5 {
            let version = buffer[start + 4]
            guard version == Frame.version else {
                throw WireError(.unsupportedVersion, "protocol version \(version) is not supported (this build speaks version \(Frame.version))")
            }
        }
        guard bufferedByteCount >= 4 + length else { return nil }
        _ = try header.read(UInt8.self)
        let kind = try header.read(UInt8.self)
        let generation = Generation(try header.read(UInt64.self))
        let payloadStart = start + Frame.headerSize
        let end = start + 4 + length
        let frame = Frame(kind: kind, generation: generation, payload: Array(buffer[payloadStart..<end]))
        start = end
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 16)
            start = 0
        }
        return frame
    }
}
