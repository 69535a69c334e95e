// What the operating system says about a process: CPU time (utime + stime, all threads) and
// resident memory, read from /proc. Every CPU figure in the report comes from here, for the
// servers and the generators alike.

import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import type { ServerProcess } from './targets/process.js';

function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

const TICKS = clockTicksPerSecond();

/** CPU time the process has used so far (user + system, all its threads), in µs. */
export function cpuUs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1e6) / TICKS;
}

/** Resident set size of the process now, in bytes. */
export function rssBytes(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match ? Number(match[1]) * 1024 : NaN;
}

/** A process and all its descendants, from /proc/<pid>/task/<tid>/children. */
export function processTree(pid: number): number[] {
  const children = fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
    fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
  return [pid, ...children.flatMap(processTree)];
}

/** The processes whose CPU and memory count as the server's. */
export function serverPids(server: ServerProcess): number[] {
  return server.pids?.() ?? [server.pid];
}

/** Resident memory of a set of processes together, in bytes. */
export function totalRssBytes(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + rssBytes(pid), 0);
}

/** The soft limit on open files this process (and what it starts) runs with. */
export function openFilesLimit(): number {
  const limits = fs.readFileSync('/proc/self/limits', 'utf8');
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return !match || match[1] === 'unlimited' ? Infinity : Number(match[1]);
}

/** CPU used by a set of processes between two points in time. */
export class CpuWindow {
  private readonly startCpu: number;
  private readonly startWall = performance.now();

  constructor(private readonly pids: number[]) {
    this.startCpu = this.total();
  }

  /** CPU µs used since construction, and the same as a share of one core (1 = 100 %). */
  stop(): { cpuUs: number; cores: number; wallMs: number } {
    const cpu = this.total() - this.startCpu;
    const wallMs = performance.now() - this.startWall;
    return { cpuUs: cpu, cores: cpu / (wallMs * 1000), wallMs };
  }

  private total(): number {
    return this.pids.reduce((sum, pid) => sum + cpuUs(pid), 0);
  }
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
