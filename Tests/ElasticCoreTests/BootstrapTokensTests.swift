import ElasticCore
import Testing

@Suite("Bootstrap tokens")
struct BootstrapTokensTests {
    static let hash: [UInt8] = [0x9F, 0x86, 0xD0, 0x81, 0x88, 0x4C, 0x7D, 0x65, 0x9A, 0x2F, 0xEA, 0xA0, 0xC5, 0x5A, 0xD0, 0x15]

    static func record(_ id: String, expiresAt: Int64? = 2_000_000_000, usesLeft: UInt32? = nil, createdAt: Int64 = 1_700_000_000, hash: [UInt8] = hash) -> BootstrapTokens.Record {
        .init(id: id, secretHash: hash, createdAt: createdAt, expiresAt: expiresAt, usesLeft: usesLeft, description: "token \(id)")
    }

    // MARK: Parsing

    @Test func parsesAWellFormedToken() throws {
        let parsed = try BootstrapTokens.parse("abc123.0123456789abcdef").get()
        #expect(parsed.id == "abc123")
        #expect(parsed.secret == "0123456789abcdef")
        let digits = try BootstrapTokens.parse("000000.zzzzzzzzzzzzzzzz").get()
        #expect(digits.id == "000000")
        #expect(digits.secret == "zzzzzzzzzzzzzzzz")
    }

    @Test(arguments: [
        "",
        ".",
        "abc12.0123456789abcdef",     // id of 5
        "abc1234.0123456789abcdef",   // id of 7
        "abc123.0123456789abcde",     // secret of 15
        "abc123.0123456789abcdef0",   // secret of 17
        "ABC123.0123456789abcdef",    // uppercase id
        "abc123.0123456789ABCDEF",    // uppercase secret
        "abc1230123456789abcdef",     // no dot
        "abc123..0123456789abcdef",   // two dots
        "abc.123.0123456789abcdef",   // extra dot
        "abc123.0123456789abcdef.",   // trailing dot
        ".abc123.0123456789abcdef",   // leading dot
        "abc123-0123456789abcdef",    // wrong separator
        "abc_23.0123456789abcdef",    // underscore
        "abc12é.0123456789abcdef",    // non-ASCII
        " abc123.0123456789abcdef",   // whitespace
        "abc123.0123456789abcdef\n",
        "abc123.",
        ".0123456789abcdef",
    ])
    func refusesMalformedTokens(token: String) {
        guard case .failure(let error) = BootstrapTokens.parse(token) else {
            Issue.record("\(token.debugDescription) was accepted")
            return
        }
        #expect(error.explanation.contains("<id>.<secret>"))
    }

    // MARK: Redeeming

    @Test func redeemSpendsUsesUntilTheLimit() throws {
        var tokens = BootstrapTokens(records: [Self.record("abc123", usesLeft: 2)])
        #expect(throws: Never.self) { try tokens.redeem(id: "abc123", secretHash: Self.hash, now: 1_800_000_000).get() }
        #expect(tokens.records["abc123"]?.uses == 1)
        #expect(tokens.records["abc123"]?.usesLeft == 1)
        #expect(throws: Never.self) { try tokens.redeem(id: "abc123", secretHash: Self.hash, now: 1_800_000_001).get() }
        #expect(tokens.records["abc123"]?.uses == 2)
        #expect(tokens.records["abc123"]?.usesLeft == 0)

        let before = tokens
        let third = tokens.redeem(id: "abc123", secretHash: Self.hash, now: 1_800_000_002)
        #expect(failure(of: third) == .exhausted(id: "abc123", uses: 2))
        #expect(tokens == before)
        #expect(failure(of: third)?.explanation.contains("already used 2 time(s)") == true)
    }

    @Test func unlimitedTokensCountEveryUse() {
        var tokens = BootstrapTokens(records: [Self.record("abc123", expiresAt: nil, usesLeft: nil)])
        for use in 1...50 {
            #expect(failure(of: tokens.redeem(id: "abc123", secretHash: Self.hash, now: Int64(use) * 1_000_000_000)) == nil)
        }
        #expect(tokens.records["abc123"]?.uses == 50)
        #expect(tokens.records["abc123"]?.usesLeft == nil)
    }

    @Test func refusedRedeemsChangeNothing() {
        let tokens = BootstrapTokens(records: [
            Self.record("abc123", usesLeft: 3),
            Self.record("expire", expiresAt: 1_000, usesLeft: 3),
            Self.record("usedup", usesLeft: 0),
        ])
        var wrongHash = Self.hash
        wrongHash[wrongHash.count - 1] ^= 1
        let cases: [(String, [UInt8], Int64, BootstrapTokens.Refusal)] = [
            ("abc123", wrongHash, 500, .wrongSecret(id: "abc123")),
            ("abc123", Array(Self.hash.dropLast()), 500, .wrongSecret(id: "abc123")),
            ("abc123", Self.hash + [0], 500, .wrongSecret(id: "abc123")),
            ("abc123", [], 500, .wrongSecret(id: "abc123")),
            ("zzz999", Self.hash, 500, .unknown(id: "zzz999")),
            ("", Self.hash, 500, .unknown(id: "")),
            ("expire", Self.hash, 1_000, .expired(id: "expire", at: 1_000)),  // now == expiresAt is expired
            ("expire", Self.hash, 5_000_000, .expired(id: "expire", at: 1_000)),
            ("usedup", Self.hash, 500, .exhausted(id: "usedup", uses: 0)),
        ]
        for (id, hash, now, expected) in cases {
            var copy = tokens
            let result = copy.redeem(id: id, secretHash: hash, now: now)
            #expect(failure(of: result) == expected, "\(id) at \(now)")
            #expect(copy == tokens, "a refused redeem of \(id) changed the registry")
            #expect(failure(of: result)?.explanation.contains("token \(id) ") == true)
        }
        // One second before the expiry it still works.
        var copy = tokens
        #expect(failure(of: copy.redeem(id: "expire", secretHash: Self.hash, now: 999)) == nil)
        #expect(copy.records["expire"]?.uses == 1)
        #expect(copy.records["expire"]?.usesLeft == 2)
    }

    @Test func refusalsExplainWhatToDo() {
        #expect(BootstrapTokens.Refusal.unknown(id: "abc123").explanation.contains("elastic token create"))
        #expect(BootstrapTokens.Refusal.wrongSecret(id: "abc123").explanation.contains("wrong secret"))
        // Unknown and wrong secret read the same (but for the id the caller sent).
        #expect(BootstrapTokens.Refusal.wrongSecret(id: "abc123").explanation == BootstrapTokens.Refusal.unknown(id: "abc123").explanation)
        #expect(BootstrapTokens.Refusal.expired(id: "abc123", at: 5).explanation.contains("expired"))
        #expect(BootstrapTokens.Refusal.exhausted(id: "abc123", uses: 4).explanation.contains("--uses"))
    }

    @Test
    func redeemNeverTrapsOnAUseCounterAtItsMaximum() {
        var tokens = BootstrapTokens(records: [
            BootstrapTokens.Record(id: "abc123", secretHash: [1, 2, 3], createdAt: 0, expiresAt: nil, usesLeft: nil, uses: .max, description: ""),
        ])
        let result = tokens.redeem(id: "abc123", secretHash: [1, 2, 3], now: 1)
        #expect((try? result.get()) != nil)
        #expect(tokens.records["abc123"]?.uses == .max, "the counter saturates")
    }

    // MARK: Revoking and pruning

    @Test func revokeRemovesAToken() {
        var tokens = BootstrapTokens(records: [Self.record("abc123"), Self.record("def456")])
        let first = tokens.revoke(id: "abc123")
        let second = tokens.revoke(id: "abc123")
        let unknown = tokens.revoke(id: "nope00")
        #expect(first)
        #expect(!second)
        #expect(!unknown)
        #expect(tokens.records.keys.sorted() == ["def456"])
        #expect(failure(of: tokens.redeem(id: "abc123", secretHash: Self.hash, now: 0)) == .unknown(id: "abc123"))
    }

    @Test func pruneDropsTokensExpiredLongerThanTheGrace() {
        var tokens = BootstrapTokens(records: [
            Self.record("old001", expiresAt: 100),
            Self.record("old002", expiresAt: 50),
            Self.record("recent", expiresAt: 10_000),
            Self.record("future", expiresAt: 1_000_000),
            Self.record("always", expiresAt: nil),
        ])
        #expect(tokens.prune(now: 100 + 86_400 - 1) == ["old002"])
        #expect(tokens.prune(now: 100 + 86_400) == ["old001"])
        #expect(tokens.prune(now: 100 + 86_400) == [])
        #expect(tokens.records.keys.sorted() == ["always", "future", "recent"])
        #expect(tokens.prune(now: 10_000, grace: 0) == ["recent"])
        #expect(tokens.prune(now: .max - 1, grace: 0) == ["future"])
        #expect(tokens.records.keys.sorted() == ["always"])

        var many = BootstrapTokens(records: ["zz0000", "aa0000", "mm0000"].map { Self.record($0, expiresAt: 1) })
        #expect(many.prune(now: 1, grace: 0) == ["aa0000", "mm0000", "zz0000"], "sorted ids")
        #expect(many.records.isEmpty)
    }

    @Test func addReplacesAndSortedOrdersByCreationThenID() {
        var tokens = BootstrapTokens()
        tokens.add(Self.record("ccc000", createdAt: 30))
        tokens.add(Self.record("bbb000", createdAt: 10))
        tokens.add(Self.record("aaa000", createdAt: 30))
        tokens.add(Self.record("ddd000", createdAt: 20))
        #expect(tokens.sorted.map(\.id) == ["bbb000", "ddd000", "aaa000", "ccc000"])
        tokens.add(Self.record("bbb000", createdAt: 40))
        #expect(tokens.records.count == 4)
        #expect(tokens.sorted.map(\.id) == ["ddd000", "aaa000", "ccc000", "bbb000"])
        // The last of several records with one id wins.
        let duplicated = BootstrapTokens(records: [Self.record("abc123", usesLeft: 1), Self.record("abc123", usesLeft: 9)])
        #expect(duplicated.records.count == 1)
        #expect(duplicated.records["abc123"]?.usesLeft == 9)
    }
}

private func failure<Failure: Error>(of result: Result<Void, Failure>) -> Failure? {
    if case .failure(let error) = result { error } else { nil }
}
