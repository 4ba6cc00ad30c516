"""Patient partitions: one dynamic partition per sanitised patient key, added by the inbox sensor or the CLI."""

import dagster as dg

patients = dg.DynamicPartitionsDefinition(name="patients")

MAX_PATIENTS_PER_RUN = 25
"""Patient partitions per run (backfills, the sensor's new patients): one run start-up for many patients."""
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"
"""Run tags that make one run cover a range of partitions."""


def partition_range(tags) -> str | None:
    """The partitions a run covers, from its tags: one key, a ``first...last`` range, or None."""
    single = tags.get("dagster/partition")
    if single:
        return single
    first, last = tags.get(PARTITION_RANGE_START), tags.get(PARTITION_RANGE_END)
    return None if first is None else first if first == last else f"{first}...{last}"
