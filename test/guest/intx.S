# The INTx guest: a flat 32-bit program that takes edu's INTx through KVM's in-kernel IOAPIC. It
# programs IOAPIC pin P_GSI for its vector (level-triggered, active high, fixed, APIC 0), enables
# its local APIC, and raises edu's interrupt P_COUNT times, one at a time. Its handler acknowledges
# edu and EOIs: the EOI of a level-triggered vector reaches the IOAPIC, whose resampler lowers the
# line and signals the resample eventfd, and VFIO unmasks INTx on it, so the next raise arrives.
# Checkpoints: 1 set-up, 2 raising, 0xff done.
  .intel_syntax noprefix
  .code32

  .set PARAMS, 0x7000
  .set P_EDU, PARAMS + 0x00        # edu BAR 0 address
  .set P_GSI, PARAMS + 0x04        # the IOAPIC pin edu's INTx is wired to
  .set P_VECTOR, PARAMS + 0x08     # the guest's vector for it
  .set P_COUNT, PARAMS + 0x0c      # how many interrupts to take

  .set RESULTS, 0x7100
  .set R_TAKEN, RESULTS + 0x00     # interrupts the handler took
  .set R_STATUS, RESULTS + 0x04    # edu's interrupt status, ORed over the handler's reads
  .set IDT, 0x9000
  .set CHECK, 0x501
  .set LAPIC, 0xfee00000
  .set IOAPIC, 0xfec00000

  .text
  .globl _start
_start:
  mov al, 1
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
  mov ecx, [P_GSI]
  lea eax, [ecx * 2 + 0x11]         # redirection entry, high half: destination APIC 0
  mov [IOAPIC], eax
  mov dword ptr [IOAPIC + 0x10], 0
  lea eax, [ecx * 2 + 0x10]         # low half: the vector, level-triggered, unmasked
  mov [IOAPIC], eax
  mov eax, [P_VECTOR]
  or eax, 0x8000
  mov [IOAPIC + 0x10], eax

  mov al, 2
  call checkpoint
  mov ebx, [P_EDU]
  xor esi, esi                      # raises so far
1:
  cmp esi, [P_COUNT]
  jae 3f
  mov dword ptr [ebx + 0x60], 1     # edu raises its INTx
  inc esi
2:
  cmp [R_TAKEN], esi
  jae 1b
  sti
  hlt                               # the in-kernel APIC wakes us; no exit
  cli
  jmp 2b
3:
  mov al, 0xff
  call checkpoint
4:
  cli
  hlt
  jmp 4b

# checkpoint: write AL to the checkpoint port.
checkpoint:
  mov dx, CHECK
  out dx, al
  ret

# The INTx handler: read and acknowledge edu's interrupt status (edu lowers INTx), count, EOI.
handler:
  push eax
  push ebx
  mov ebx, [P_EDU]
  mov eax, [ebx + 0x24]
  or [R_STATUS], eax
  mov [ebx + 0x64], eax
  inc dword ptr [R_TAKEN]
  mov dword ptr [LAPIC + 0xb0], 0
  pop ebx
  pop eax
  iretd
