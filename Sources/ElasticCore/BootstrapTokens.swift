/// Bootstrap tokens, kubeadm-style: `<id>.<secret>`, 6 and 16 characters of `[a-z0-9]`. The
/// registry keeps only a hash of each secret (computed by the shell), an expiry and a use count.
/// Wall-clock time enters as seconds since 1970, passed in.
public struct BootstrapTokens: Sendable, Equatable {
    public struct Record: Sendable, Equatable {
        public let id: String
        public let secretHash: [UInt8]
        public let createdAt: Int64
        /// Seconds since 1970 after which the token is refused; nil never expires.
        public let expiresAt: Int64?
        /// How many joins it may still admit; nil is unlimited.
        public var usesLeft: UInt32?
        public var uses: UInt32
        public let description: String

        public init(id: String, secretHash: [UInt8], createdAt: Int64, expiresAt: Int64?, usesLeft: UInt32?, uses: UInt32 = 0, description: String) {
            self.id = id
            self.secretHash = secretHash
            self.createdAt = createdAt
            self.expiresAt = expiresAt
            self.usesLeft = usesLeft
            self.uses = uses
            self.description = description
        }
    }

    public enum Refusal: Error, Sendable, Equatable {
        case unknown(id: String)
        case wrongSecret(id: String)
        case expired(id: String, at: Int64)
        case exhausted(id: String, uses: UInt32)

        public var explanation: String {
            switch self {
            // The same answer for both, so that nobody learns which token ids exist.
            case .unknown(let id), .wrongSecret(let id):
                return "token \(id) is not valid here (unknown, revoked, or a wrong secret); copy the whole token printed by 'elastic token create', or create a new one"
            case .expired(let id, _): return "token \(id) has expired; create a new one with 'elastic token create'"
            case .exhausted(let id, let uses): return "token \(id) was already used \(uses) time(s), its limit; create a new one with 'elastic token create --uses N'"
            }
        }
    }

    public private(set) var records: [String: Record] = [:]

    public init(records: [Record] = []) {
        for record in records { self.records[record.id] = record }
    }

    /// Splits `<id>.<secret>`; nil with a reason when malformed.
    public static func parse(_ token: String) -> Result<(id: String, secret: String), TokenFormatError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 6, parts[1].count == 16,
              (parts[0] + parts[1]).utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) })
        else { return .failure(TokenFormatError()) }
        return .success((String(parts[0]), String(parts[1])))
    }

    public struct TokenFormatError: Error, Sendable, Equatable {
        public init() {}
        public var explanation: String {
            "malformed token: expected <id>.<secret> with 6 and 16 characters of [a-z0-9], as printed by 'elastic token create'"
        }
    }

    public mutating func add(_ record: Record) {
        records[record.id] = record
    }

    /// Removes a token; returns whether it existed.
    @discardableResult
    public mutating func revoke(id: String) -> Bool {
        records.removeValue(forKey: id) != nil
    }

    /// Spends one use of the token if its secret hash matches and it is neither expired nor
    /// used up. A refused redeem changes nothing.
    public mutating func redeem(id: String, secretHash: [UInt8], now: Int64) -> Result<Void, Refusal> {
        if case .failure(let refusal) = check(id: id, secretHash: secretHash, now: now) { return .failure(refusal) }
        var record = records[id]!
        if let left = record.usesLeft { record.usesLeft = left - 1 }
        record.uses = record.uses == .max ? .max : record.uses + 1
        records[id] = record
        return .success(())
    }

    /// Whether `redeem` would succeed, without spending a use: checked before any work is done
    /// for the request (signing its CSR, say).
    public func check(id: String, secretHash: [UInt8], now: Int64) -> Result<Void, Refusal> {
        guard let record = records[id] else { return .failure(.unknown(id: id)) }
        guard constantTimeEqual(record.secretHash, secretHash) else { return .failure(.wrongSecret(id: id)) }
        if let expiresAt = record.expiresAt, now >= expiresAt { return .failure(.expired(id: id, at: expiresAt)) }
        if let left = record.usesLeft, left == 0 { return .failure(.exhausted(id: id, uses: record.uses)) }
        return .success(())
    }

    /// Drops tokens that expired more than `grace` seconds ago; returns their ids.
    public mutating func prune(now: Int64, grace: Int64 = 86_400) -> [String] {
        let gone = records.values.filter { ($0.expiresAt ?? .max) <= now - grace }.map(\.id).sorted()
        for id in gone { records[id] = nil }
        return gone
    }

    /// Records sorted by creation time, then id.
    public var sorted: [Record] {
        records.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }
}

private func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
