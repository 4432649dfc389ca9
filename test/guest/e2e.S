# The end-to-end guest: a flat 32-bit protected-mode program (no OS, no paging) that the lab runs
# under KVM against passed-through devices. lib/kvm's tests load it at GUEST_LOAD, set flat
# segments, a GDT and an IDT base, fill PARAMS, and read RESULTS back when it is done.
#
# Each phase starts with a checkpoint (its number written to port CHECK), so the VMM can count the
# exits of each phase. Phases: 1 edu ID and liveness through a direct slot; 2 rtl8139's sub-page
# BAR 1 off page alignment (trapped-mmap) and its I/O BAR 0 (trapped-fd); 3 the RTL8168 window
# quirk on ivshmem (emulated); 4 edu DMA from guest RAM and back; 5 edu's MSI to the guest's own
# handler; 6 edu BAR 0 moved by the guest's config cycles; 7 memory decode off and on; 0xff done.
  .intel_syntax noprefix
  .code32

  .set PARAMS, 0x7000
  .set P_EDU, PARAMS + 0x00        # edu BAR 0 address
  .set P_RTL_MMIO, PARAMS + 0x04   # rtl8139 BAR 1 address (off page alignment)
  .set P_RTL_IO, PARAMS + 0x08     # rtl8139 BAR 0 port
  .set P_IVS, PARAMS + 0x0c        # ivshmem (as RTL8168) BAR 2 address
  .set P_EDU_CFG, PARAMS + 0x10    # edu's config address for port 0xcf8 (0x80000000 | dev << 11)
  .set P_EDU_MSI, PARAMS + 0x14    # edu's MSI capability offset
  .set P_EDU_NEW, PARAMS + 0x18    # where the guest moves edu BAR 0
  .set P_VECTOR, PARAMS + 0x1c     # the MSI vector
  .set P_DMA_SRC, PARAMS + 0x20    # guest-physical DMA buffers (identity IOVA)
  .set P_DMA_DST, PARAMS + 0x24

  .set RESULTS, 0x7100
  .set IDT, 0x9000
  .set CHECK, 0x501
  .set LAPIC, 0xfee00000

  .text
  .globl _start
_start:
  mov al, 1
  call checkpoint
  mov ebx, [P_EDU]
  mov eax, [ebx]                    # identification register
  mov [RESULTS + 0x00], eax
  mov dword ptr [ebx + 0x04], 0x12345678
  mov eax, [ebx + 0x04]             # liveness: edu answers with the inverse
  mov [RESULTS + 0x04], eax

  mov al, 2
  call checkpoint
  mov ebx, [P_RTL_MMIO]
  mov eax, [ebx]                    # IDR0-3, one 4-byte access
  mov [RESULTS + 0x08], eax
  movzx eax, byte ptr [ebx + 4]     # IDR4, one byte
  mov [RESULTS + 0x0c], eax
  mov dword ptr [ebx + 8], 0xa1b2c3d4   # MAR0-3
  movzx eax, byte ptr [ebx + 9]
  mov [RESULTS + 0x10], eax
  movzx eax, word ptr [ebx + 0x0a]
  mov [RESULTS + 0x14], eax
  mov edx, [P_RTL_IO]
  in eax, dx                        # IDR0-3 through the I/O BAR
  mov [RESULTS + 0x18], eax

  mov al, 3
  call checkpoint
  mov ebx, [P_IVS]
  mov dword ptr [ebx + 0x70], 0x11223344   # window data
  mov dword ptr [ebx + 0x74], 0x00020000   # window address outside the MSI-X table
  mov eax, [ebx + 0x70]
  mov [RESULTS + 0x1c], eax
  mov dword ptr [ebx + 0x74], 0x80010000   # a table write: never reaches the device
  mov eax, [ebx + 0x74]                    # completion flag flipped by the quirk
  mov [RESULTS + 0x20], eax
  mov dword ptr [ebx + 0x2000], 0xcafef00d # the direct part of BAR 2
  mov eax, [ebx + 0x2000]
  mov [RESULTS + 0x24], eax

  mov al, 4
  call checkpoint
  mov edi, [P_DMA_SRC]
  xor ecx, ecx
1:
  lea eax, [ecx + ecx * 2 + 1]
  mov [edi + ecx], al
  inc ecx
  cmp ecx, 64
  jb 1b
  mov ebx, [P_EDU]
  mov eax, [P_DMA_SRC]
  mov [ebx + 0x80], eax             # source: guest RAM
  mov dword ptr [ebx + 0x88], 0x40000   # destination: edu's buffer
  mov dword ptr [ebx + 0x90], 64
  mov dword ptr [ebx + 0x98], 1     # start, RAM to edu
2:
  test dword ptr [ebx + 0x98], 1
  jnz 2b
  mov dword ptr [ebx + 0x80], 0x40000
  mov eax, [P_DMA_DST]
  mov [ebx + 0x88], eax
  mov dword ptr [ebx + 0x90], 64
  mov dword ptr [ebx + 0x98], 3     # start, edu to RAM
3:
  test dword ptr [ebx + 0x98], 1
  jnz 3b
  mov esi, [P_DMA_SRC]
  mov edi, [P_DMA_DST]
  mov ecx, 16
  cld
  repe cmpsd
  mov [RESULTS + 0x28], ecx         # 0: all 16 dwords came back
  mov edi, [P_DMA_DST]
  mov eax, [edi]
  mov [RESULTS + 0x2c], eax

  mov al, 5
  call checkpoint
  mov eax, offset handler           # interrupt gate for the vector
  mov edi, [P_VECTOR]
  lea edi, [IDT + edi * 8]
  mov [edi], ax
  mov word ptr [edi + 2], 0x08
  mov word ptr [edi + 4], 0x8e00
  shr eax, 16
  mov [edi + 6], ax
  mov dword ptr [LAPIC + 0xf0], 0x1ff   # software-enable the local APIC
  mov esi, [P_EDU_MSI]
  lea eax, [esi + 4]
  mov ecx, LAPIC                    # message address: APIC 0, fixed
  call cfg_write32
  lea eax, [esi + 8]
  xor ecx, ecx                      # upper address
  call cfg_write32
  lea eax, [esi + 0x0c]
  mov ecx, [P_VECTOR]               # message data: the vector, edge
  call cfg_write32
  mov eax, esi                      # MSI enable (flags at +2)
  call cfg_select
  mov dx, 0xcfe
  in ax, dx
  or ax, 1
  out dx, ax
  mov ebx, [P_EDU]
  mov dword ptr [ebx + 0x60], 1     # edu raises its interrupt
4:
  cmp dword ptr [RESULTS + 0x30], 0
  jne 5f
  sti
  hlt                               # the in-kernel APIC wakes us; no exit
  cli
  jmp 4b
5:

  mov al, 6
  call checkpoint
  mov eax, 0x10                     # BAR 0
  mov ecx, [P_EDU_NEW]
  call cfg_write32
  mov ebx, [P_EDU_NEW]
  mov eax, [ebx]                    # the ID at the new address, direct again
  mov [RESULTS + 0x38], eax
  mov ebx, [P_EDU]
  mov eax, [ebx]                    # nothing at the old address any more
  mov [RESULTS + 0x3c], eax

  mov al, 7
  call checkpoint
  mov eax, 0x04                     # command: bus master only, memory decode off
  mov ecx, 0x0004
  call cfg_write32
  mov ebx, [P_EDU_NEW]
  mov eax, [ebx]
  mov [RESULTS + 0x40], eax
  mov eax, 0x04
  mov ecx, 0x0007
  call cfg_write32
  mov eax, [ebx]
  mov [RESULTS + 0x44], eax

  mov al, 0xff
  call checkpoint
6:
  cli
  hlt
  jmp 6b

# checkpoint: write AL to the checkpoint port.
checkpoint:
  mov dx, CHECK
  out dx, al
  ret

# cfg_select: point port 0xcf8 at edu's config register EAX (dword-aligned part).
cfg_select:
  and eax, 0xfc
  or eax, [P_EDU_CFG]
  mov dx, 0xcf8
  out dx, eax
  ret

# cfg_write32: write ECX to edu's config register EAX.
cfg_write32:
  call cfg_select
  mov dx, 0xcfc
  mov eax, ecx
  out dx, eax
  ret

# The MSI handler: read and acknowledge edu's interrupt status, count, EOI.
handler:
  push eax
  push ebx
  mov ebx, [P_EDU]
  mov eax, [ebx + 0x24]
  mov [RESULTS + 0x34], eax
  mov [ebx + 0x64], eax
  inc dword ptr [RESULTS + 0x30]
  mov dword ptr [LAPIC + 0xb0], 0
  pop ebx
  pop eax
  iretd
