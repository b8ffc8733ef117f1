import ElasticCore
import Testing

/// Values waiting in a mailbox are bounded in count and weight; taking one frees its room.
@Suite struct MailboxBoundsTests {
    @Test func valuesBeyondTheBoundsAreRefusedAndTakingFreesRoom() async throws {
        let mailbox = Mailbox<Int, [UInt8]>(maximumCount: 3, maximumWeight: 100, weight: { $0.count })
        #expect(await mailbox.deliver([UInt8](repeating: 1, count: 40), for: 1))
        #expect(await mailbox.deliver([UInt8](repeating: 2, count: 40), for: 2))
        #expect(await !mailbox.deliver([UInt8](repeating: 3, count: 40), for: 3), "140 bytes exceed 100")
        #expect(await mailbox.deliver([UInt8](repeating: 3, count: 20), for: 3))
        #expect(await !mailbox.deliver([1], for: 4), "a fourth value exceeds the count")
        // Replacing a key counts its new weight only.
        #expect(await mailbox.deliver([UInt8](repeating: 9, count: 30), for: 1))
        #expect(await mailbox.pendingCount == 3)
        #expect(try await mailbox.take(2).count == 40)
        #expect(await mailbox.deliver([UInt8](repeating: 4, count: 40), for: 4))
        // A new generation starts empty.
        await mailbox.reset()
        #expect(await mailbox.deliver([UInt8](repeating: 6, count: 100), for: 6))
    }
}
