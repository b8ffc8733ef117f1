/// The identity of a worker: the common name of its node certificate.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let value: String

    public init(_ value: String) { self.value = value }
    public init(stringLiteral value: String) { self.value = value }

    public var description: String { value }
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.value < rhs.value }

    /// Node ids are certificate names and file names: 1–63 characters of `[a-z0-9-]`, starting
    /// with a letter or digit. Returns a sentence that says what is wrong, or nil when valid.
    public static func problem(with candidate: String) -> String? {
        if candidate.isEmpty || candidate.utf8.count > 63 {
            return "a node name must be 1 to 63 characters long"
        }
        let allowed = candidate.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }
        if !allowed || candidate.hasPrefix("-") {
            return "a node name may hold only lowercase letters, digits and '-', and may not start with '-'"
        }
        if candidate == "admin" || candidate == "controller" {
            return "'\(candidate)' is reserved for the cluster's own certificates"
        }
        return nil
    }
}

/// A number the controller increases on every membership change. Every message carries one;
/// a member's *incarnation* is the generation its join created, so it is unique per join.
public struct Generation: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }
    public init(integerLiteral value: UInt64) { self.value = value }

    public static let zero = Generation(0)
    public var next: Generation { Generation(value + 1) }
    public var description: String { String(value) }
    public static func < (lhs: Generation, rhs: Generation) -> Bool { lhs.value < rhs.value }
}
