# Time budgets (CTest TIMEOUT, seconds) for every test registered above: a default per kind
# (the test's label) and the tests that need more. Each budget is about 4x the time the
# test took in the ci preset on a 2-core machine while other builds and suites ran beside
# it (docs/testing.md has the measured times), so that a loaded machine still fits and a
# hang is still caught. A test added without an entry gets its kind's default.
set(VMSNAP_BUDGET_unit 120)
set(VMSNAP_BUDGET_fuzz 60)
set(VMSNAP_BUDGET_cli 300)
set(VMSNAP_BUDGET_e2e 600)
set(VMSNAP_BUDGET_dist 1500)
set(VMSNAP_BUDGET_long 3600)
set(VMSNAP_BUDGET_cluster 240)
set(VMSNAP_BUDGET_DEFAULT 300)

set(VMSNAP_TEST_BUDGETS
    unit/test-mem-property 300
    unit/test-store-crash 300
    unit/test-store-archive 300
    cli/snapshot-crash 600
    cli/remote-ceph 1200
    e2e/remote-spawn 1200
    e2e/sandbox-merge 360
    e2e/accel-visible 150
    dist/install-script 60
    e2e/dashboard 360
    cli/api-conformance 480
    e2e/sandbox-network 720
    long/sandbox-network-cycles 1800
    cluster/daemon-hosts 240
    e2e/clone-share 300
    unit/test-vmm-qemu 480
    cli/mem-reflink 60)

get_property(vmsnap_all_tests DIRECTORY PROPERTY TESTS)
foreach(test ${vmsnap_all_tests})
  get_test_property(${test} LABELS labels)
  list(GET labels 0 kind)
  if(DEFINED VMSNAP_BUDGET_${kind})
    set(budget ${VMSNAP_BUDGET_${kind}})
  else()
    set(budget ${VMSNAP_BUDGET_DEFAULT})
  endif()
  list(FIND VMSNAP_TEST_BUDGETS ${test} at)
  if(at GREATER -1)
    math(EXPR at "${at} + 1")
    list(GET VMSNAP_TEST_BUDGETS ${at} budget)
  endif()
  set_tests_properties(${test} PROPERTIES TIMEOUT ${budget})
endforeach()
