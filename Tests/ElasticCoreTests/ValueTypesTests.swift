import ElasticCore
import Testing

@Suite("Membership settings")
struct SettingsTests {
    @Test func defaultsAreConsistent() {
        let settings = Membership.Settings()
        #expect(settings.problem == nil)
        #expect(settings.heartbeatInterval < settings.suspectAfter)
        #expect(settings.suspectAfter <= settings.deadTimeout)
        #expect(settings.maxTickInterval > .zero)
    }

    @Test func heartbeatIntervalMustBeShorterThanTheDeadTimeout() {
        var settings = Membership.Settings()
        settings.heartbeatInterval = .seconds(2)
        settings.deadTimeout = .seconds(2)
        #expect(settings.problem == "the heartbeat interval (2s) must be shorter than the dead timeout (2s)")
        settings.heartbeatInterval = .seconds(5)
        #expect(settings.problem == "the heartbeat interval (5s) must be shorter than the dead timeout (2s)")
        settings.heartbeatInterval = .milliseconds(1999)
        #expect(settings.problem == nil)
    }

    @Test func suspectAfterMustNotExceedTheDeadTimeout() {
        var settings = Membership.Settings()
        settings.deadTimeout = .seconds(3)
        settings.suspectAfter = .milliseconds(3500)
        #expect(settings.problem == "suspect-after (3.5s) must not exceed the dead timeout (3s)")
        settings.suspectAfter = .seconds(3)
        #expect(settings.problem == nil)
    }

    @Test func aLongReconnectGraceOrTickIsNotAnInconsistency() {
        var settings = Membership.Settings()
        settings.reconnectGrace = .seconds(60)
        settings.reconnectGrace = .zero
        settings.maxTickInterval = .seconds(10)
        #expect(settings.problem == nil)
    }
}

@Suite("Duration parsing and printing")
struct DurationTests {
    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)),
        ("2s", .seconds(2)),
        ("1.5s", .milliseconds(1500)),
        ("30m", .seconds(1800)),
        ("1h", .seconds(3600)),
        ("7d", .seconds(7 * 86_400)),
        ("0s", .zero),
        ("0ms", .zero),
        ("1ms", .milliseconds(1)),
        ("1.5ms", .microseconds(1500)),
        ("0.5s", .milliseconds(500)),
        ("1.25m", .seconds(75)),
        ("12h", .seconds(43_200)),
        ("100000d", .seconds(100_000 * 86_400)),
    ])
    func parsesANumberAndAUnit(text: String, expected: Duration) {
        #expect(Duration(parsing: text) == expected, "\(text)")
    }

    @Test(arguments: ["", "s", "ms", "-1s", "1x", "abc", "1", "1.5", " 1s", "1s ", "1 s", "+1s", "1e3s", "1,5s", "infs", "nans",
                      "1S", "1sec", "1mss", "1.2.3s", "s1", "200000d", "999999999999999999999h"])
    func rejectsAnythingElse(text: String) {
        #expect(Duration(parsing: text) == nil, "\(text)")
    }

    @Test func parsedDecimalsAreExactToTheNanosecond() {
        // Values a user would type; binary floating point must not make 2.3s into 2.299999999s.
        let cases: [(String, Int64)] = [
            ("0.1s", 100_000_000), ("0.3s", 300_000_000), ("2.3s", 2_300_000_000), ("4.35s", 4_350_000_000),
            ("0.7s", 700_000_000), ("1.1s", 1_100_000_000), ("3ms", 3_000_000), ("7ms", 7_000_000),
            ("0.29s", 290_000_000), ("0.57s", 570_000_000), ("9.2s", 9_200_000_000), ("1.9m", 114_000_000_000),
        ]
        for (text, nanoseconds) in cases {
            #expect(Duration(parsing: text)?.nanosecondsClamped == nanoseconds, "\(text)")
        }
    }

    @Test(arguments: [
        (Duration.zero, "0ms"),
        (.milliseconds(500), "500ms"),
        (.milliseconds(999), "999ms"),
        (.seconds(1), "1s"),
        (.milliseconds(1500), "1.5s"),
        (.seconds(2), "2s"),
        (.seconds(59), "59s"),
        (.seconds(60), "1m"),
        (.seconds(90), "1m30s"),
        (.seconds(1800), "30m"),
        (.seconds(3600), "1h"),
        (.seconds(5400), "1h30m"),
        (.seconds(7 * 86_400), "168h"),
        (.microseconds(1500), "1ms"),
    ])
    func shortDescription(duration: Duration, expected: String) {
        #expect(duration.shortDescription == expected)
    }

    @Test func parsedTextPrintsBack() {
        for text in ["500ms", "2s", "1.5s", "30m", "1h"] {
            #expect(Duration(parsing: text)?.shortDescription == text)
        }
        #expect(Duration(parsing: "90s")?.shortDescription == "1m30s")
        #expect(Duration(parsing: "2.5s")?.shortDescription == "2.5s")
        #expect(Duration(parsing: "30m")?.shortDescription == "30m")
    }

    @Test func millisecondsAndClampedNanoseconds() {
        #expect(Duration.milliseconds(1500).milliseconds == 1500)
        #expect(Duration.microseconds(1999).milliseconds == 1)
        #expect(Duration.nanoseconds(123).nanosecondsClamped == 123)
        #expect(Duration.seconds(-2).nanosecondsClamped == -2_000_000_000)
        #expect(Duration.seconds(Int64.max).nanosecondsClamped == .max)
        #expect(Duration.seconds(9_223_372_036).nanosecondsClamped == 9_223_372_036_000_000_000)
    }
}

@Suite("Timestamps and generations")
struct TimeAndGenerationTests {
    @Test func timestampArithmetic() {
        let t = Timestamp(nanoseconds: 1_000)
        #expect((t + .nanoseconds(5)).nanoseconds == 1_005)
        #expect((t + .seconds(1)).nanoseconds == 1_000_001_000)
        #expect(t + .nanoseconds(-500) == t, "a negative duration does not move time back")
        #expect((t + .nanoseconds(5)).since(t) == .nanoseconds(5))
        #expect(t.since(t + .seconds(1)) == .zero, "since a later time is zero")
        #expect(t.since(t) == .zero)
        #expect(Timestamp(nanoseconds: .max).since(.zero) == .nanoseconds(Int64.max), "saturates")
        #expect(Timestamp.zero < t)
        #expect(Timestamp(nanoseconds: 1_500_000_000).description == "t+1500ms")
    }

    @Test func generations() {
        #expect(Generation.zero.next == 1)
        #expect(Generation(41).next.value == 42)
        #expect(Generation(3) < Generation(4))
        #expect(Generation(7).description == "7")
        #expect([Generation(3), 1, 2].sorted() == [1, 2, 3])
    }

    @Test func nodeIDsCompareByValue() {
        #expect(NodeID("a") < NodeID("b"))
        #expect(NodeID("w10") < NodeID("w9"), "lexicographic, not numeric")
        #expect(("w1" as NodeID) == NodeID("w1"))
        #expect(NodeID("w1").description == "w1")
    }
}

@Suite("Node names")
struct NodeIDTests {
    @Test(arguments: ["a", "w1", "worker-7", "0abc", "a-", String(repeating: "x", count: 63), "admins", "controller-1"])
    func acceptsValidNames(name: String) {
        #expect(NodeID.problem(with: name) == nil)
    }

    @Test func refusesBadLengths() {
        #expect(NodeID.problem(with: "") == "a node name must be 1 to 63 characters long")
        #expect(NodeID.problem(with: String(repeating: "x", count: 64)) == "a node name must be 1 to 63 characters long")
        // 32 two-byte characters: 32 characters but 64 bytes.
        #expect(NodeID.problem(with: String(repeating: "é", count: 32)) != nil)
    }

    @Test(arguments: ["Worker", "w_1", "w.1", "w 1", "-w", "émile", "w1\n", "w/1", "w:1"])
    func refusesBadCharacters(name: String) {
        #expect(NodeID.problem(with: name) == "a node name may hold only lowercase letters, digits and '-', and may not start with '-'")
    }

    @Test func refusesReservedNames() {
        #expect(NodeID.problem(with: "admin") == "'admin' is reserved for the cluster's own certificates")
        #expect(NodeID.problem(with: "controller") == "'controller' is reserved for the cluster's own certificates")
    }
}
