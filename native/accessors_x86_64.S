/*
 * Fixed-width device-memory accessors for x86-64 (System V ABI).
 *
 * Each single accessor performs exactly one load or store of its width, so a device sees the access
 * the guest driver asked for: never split, never widened, never a memcpy. The instruction that
 * touches device memory is listed in an exception table (instruction -> fixup, both as 32-bit
 * offsets relative to the entry, so the table needs no dynamic relocation). When a revoked
 * mapping raises SIGBUS, the fault guard finds the faulting RIP in the table and resumes at the
 * fixup, which reports the fault through the return value. The common path costs nothing extra.
 *
 * Loads return struct { uint64 value; uint64 fault; } in rax:rdx. Stores return 0 in eax, or 1
 * after a fault. Block loops return the number of elements left undone (0 when complete).
 */
#if !defined(__x86_64__)
#error "vfio-bridge's accessors are x86-64 assembly; other architectures are not supported"
#endif

        .section .rodata.vfio_bridge_extable, "a"
        .balign 4
        .globl  vfio_bridge_extable_start
        .protected vfio_bridge_extable_start
vfio_bridge_extable_start:

        .text

/* One exception-table entry: the faulting instruction and where to resume. */
.macro EXTABLE insn, fixup
        .pushsection .rodata.vfio_bridge_extable, "a"
        .balign 4
        .long   \insn - .
        .long   \fixup - .
        .popsection
.endm

.macro FUNC name
        .globl  \name
        .protected \name
        .type   \name, @function
        .p2align 4
\name:
        .cfi_startproc
.endm

.macro ENDFUNC name
        .cfi_endproc
        .size   \name, . - \name
.endm

/* load: rdi = device address. */
.macro LOAD name, insn
FUNC \name
1:      \insn
        xorl    %edx, %edx
        ret
2:      xorl    %eax, %eax
        movl    $1, %edx
        ret
        EXTABLE 1b, 2b
ENDFUNC \name
.endm

/* store: rdi = device address, rsi = value. */
.macro STORE name, insn
FUNC \name
1:      \insn
        xorl    %eax, %eax
        ret
2:      movl    $1, %eax
        ret
        EXTABLE 1b, 2b
ENDFUNC \name
.endm

LOAD    vfio_bridge_load8,  "movzbl (%rdi), %eax"
LOAD    vfio_bridge_load16, "movzwl (%rdi), %eax"
LOAD    vfio_bridge_load32, "movl (%rdi), %eax"
LOAD    vfio_bridge_load64, "movq (%rdi), %rax"

STORE   vfio_bridge_store8,  "movb %sil, (%rdi)"
STORE   vfio_bridge_store16, "movw %si, (%rdi)"
STORE   vfio_bridge_store32, "movl %esi, (%rdi)"
STORE   vfio_bridge_store64, "movq %rsi, (%rdi)"

/*
 * Block read: rdi = destination (ordinary memory), rsi = device source, rdx = element count.
 * The device load is the only instruction in the table; rdx still holds the elements left when
 * it faults, and the fixup returns that.
 */
.macro READ_BLOCK name, load, store, step
FUNC \name
        testq   %rdx, %rdx
        jz      3f
1:      \load
        \store
        addq    $\step, %rsi
        addq    $\step, %rdi
        decq    %rdx
        jnz     1b
3:      xorl    %eax, %eax
        ret
2:      movq    %rdx, %rax
        ret
        EXTABLE 1b, 2b
ENDFUNC \name
.endm

/* Block write: rdi = device destination, rsi = source (ordinary memory), rdx = element count. */
.macro WRITE_BLOCK name, load, store, step
FUNC \name
        testq   %rdx, %rdx
        jz      3f
4:      \load
1:      \store
        addq    $\step, %rsi
        addq    $\step, %rdi
        decq    %rdx
        jnz     4b
3:      xorl    %eax, %eax
        ret
2:      movq    %rdx, %rax
        ret
        EXTABLE 1b, 2b
ENDFUNC \name
.endm

READ_BLOCK  vfio_bridge_read_block8,  "movzbl (%rsi), %eax", "movb %al, (%rdi)", 1
READ_BLOCK  vfio_bridge_read_block16, "movzwl (%rsi), %eax", "movw %ax, (%rdi)", 2
READ_BLOCK  vfio_bridge_read_block32, "movl (%rsi), %eax",   "movl %eax, (%rdi)", 4
READ_BLOCK  vfio_bridge_read_block64, "movq (%rsi), %rax",   "movq %rax, (%rdi)", 8

WRITE_BLOCK vfio_bridge_write_block8,  "movzbl (%rsi), %eax", "movb %al, (%rdi)", 1
WRITE_BLOCK vfio_bridge_write_block16, "movzwl (%rsi), %eax", "movw %ax, (%rdi)", 2
WRITE_BLOCK vfio_bridge_write_block32, "movl (%rsi), %eax",   "movl %eax, (%rdi)", 4
WRITE_BLOCK vfio_bridge_write_block64, "movq (%rsi), %rax",   "movq %rax, (%rdi)", 8

        .section .rodata.vfio_bridge_extable, "a"
        .globl  vfio_bridge_extable_end
        .protected vfio_bridge_extable_end
vfio_bridge_extable_end:

        .section .note.GNU-stack, "", @progbits
