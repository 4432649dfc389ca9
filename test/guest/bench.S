# The benchmark guest: COUNT 4-byte reads of ADDR, timed with rdtsc inside the guest. The VMM
# fills PARAMS, runs it, and reads the TSC delta from RESULTS; the checkpoint port marks the end.
  .intel_syntax noprefix
  .code32
  .set PARAMS, 0x7000
  .set RESULTS, 0x7100
  .set CHECK, 0x501

  .text
  .globl _start
_start:
  mov ebx, [PARAMS + 0x00]          # address
  mov ecx, [PARAMS + 0x04]          # count
  rdtsc
  mov esi, eax
  mov edi, edx
1:
  mov eax, [ebx]
  dec ecx
  jnz 1b
  rdtsc
  sub eax, esi
  sbb edx, edi
  mov [RESULTS + 0x00], eax
  mov [RESULTS + 0x04], edx
  mov dx, CHECK
  mov al, 0xff
  out dx, al
2:
  cli
  hlt
  jmp 2b
