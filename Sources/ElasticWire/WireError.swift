/// Why bytes from the network were refused. Decoding never traps: every malformed input ends
/// here, and the shell closes the connection with `message`.
public struct WireError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        public static let frameTooLarge = Code(name: "frameTooLarge")
        public static let frameTooShort = Code(name: "frameTooShort")
        public static let unsupportedVersion = Code(name: "unsupportedVersion")
        public static let unknownMessageKind = Code(name: "unknownMessageKind")
        public static let truncated = Code(name: "truncated")
        public static let trailingBytes = Code(name: "trailingBytes")
        public static let invalidValue = Code(name: "invalidValue")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
